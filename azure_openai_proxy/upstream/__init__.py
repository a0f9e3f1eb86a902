"""Clients for Azure: the `Transport` protocol (`transport.py`) and its implementations,
our lean FastTransport (`fast/`, HTTP/1.1), H2Transport (`h2/`, HTTP/2, `upstream.http2`),
AutoTransport (`auto.py`: https to H2Transport, http:// to FastTransport; the default)
and aiohttp's client for SOCKS proxies (FastTransport tunnels through an HTTP one,
`tunnelled.py`); Entra ID tokens (`entra.py`). Foreign errors
become ours here, once."""

"""Clients for Azure: the `Transport` protocol (`transport.py`) and its implementations,
our lean FastTransport (`fast/`) and aiohttp's client for upstream proxies; Entra ID tokens
(`entra.py`). Foreign errors become ours here, once."""

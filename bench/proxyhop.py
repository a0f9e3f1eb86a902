"""The upstream client's cost per request through an HTTP proxy (a tool, not a test):
`transport_for` the settings (the client the gateway picks for `upstream.http_proxy`)
sends `--requests` small POSTs, one at a time, through pproxy's CONNECT tunnel to a
plain-HTTP answerer; pproxy and the answerer are child processes, so only the client's
own work is in this process. CPU µs per request (process time), or instructions with
callgrind for the request loop only:

    valgrind --tool=callgrind --instr-atstart=no python -m bench.proxyhop --callgrind

The same file measures another checkout's client (PYTHONPATH at it): main's picks
aiohttp through aiohttp-socks' connector, session 28's FastTransport.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

from bench.inprocess import instrument
from tests.processes import pproxy, running

_ANSWERER = """
import asyncio, sys
ANSWER = (b'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n'
          b'Content-Length: 12\\r\\n\\r\\n{"ok": true}')
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
            await reader.readexactly(length)
            writer.write(ANSWER)
    except (OSError, asyncio.IncompleteReadError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""
_BODY = b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(requests: int, warm: int, callgrind: bool, proxy: str, url: str) -> float:
    """CPU µs per request of `requests` sent after `warm` ones."""
    from azure_openai_proxy.gateway.app import transport_for
    from azure_openai_proxy.settings import UpstreamSettings
    from azure_openai_proxy.upstream.transport import UpstreamRequest

    transport = transport_for(UpstreamSettings(http_proxy=proxy))
    print("client:", type(transport).__name__, file=sys.stderr)
    headers = {"content-type": "application/json", "api-key": "k"}

    async def one() -> None:
        response = await transport.send(UpstreamRequest("POST", url, headers, _BODY))
        await response.read(1 << 20)
        response.close()

    try:
        for _ in range(warm):
            await one()
        if callgrind:
            instrument(True)
        start = time.process_time()
        for _ in range(requests):
            await one()
        spent = time.process_time() - start
        if callgrind:
            instrument(False)
    finally:
        await transport.close()
    return spent / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    proxy_port, azure_port = _free_port(), _free_port()
    answerer = [sys.executable, "-c", _ANSWERER, str(azure_port)]
    with running(pproxy(f"http://127.0.0.1:{proxy_port}"), port=proxy_port), \
            running(answerer, port=azure_port):
        per = asyncio.run(measure(args.requests, args.warm, args.callgrind,
                                  f"http://127.0.0.1:{proxy_port}",
                                  f"http://127.0.0.1:{azure_port}/openai/x"))
    print(f"{per:.1f} CPU µs per request through the proxy ({args.requests} requests)")


if __name__ == "__main__":
    main()

"""FastServer with `tests.http_app.EngineTestApp` on a socket bound in advance, and a raw
client's helpers: the bytes a client sends, the answers it reads back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from azure_openai_proxy.http.server import FastServer, ServerLimits, serve_fast
from tests.http_app import EngineTestApp, Events
from tests.support import bound_socket

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Engine:
    server: FastServer
    events: Events
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def engine(app: Any = None, **limits: Any) -> AsyncIterator[Engine]:
    """Serve `app` (an EngineTestApp by default) with `ServerLimits(**limits)`."""
    events = Events()
    sock = bound_socket()
    server = await serve_fast(app or EngineTestApp(events), None, 0, sock=sock,
                              limits=ServerLimits(**limits))
    try:
        yield Engine(server, events, int(sock.getsockname()[1]))
    finally:
        server.close()
        await server.wait_closed()


async def read_reply(reader: asyncio.StreamReader, wait: float = 10) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read()
    return status, headers, body


async def rest(reader: asyncio.StreamReader, wait: float = 10) -> bytes:
    """Everything until the server closes the connection."""
    return await asyncio.wait_for(reader.read(), wait)


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def chunked(path: str, wire_body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
            .encode() + wire_body)


async def until(condition: Callable[[], bool], wait: float = 5) -> None:
    """Poll `condition` on the loop (the server runs on it too) until it holds."""
    async with asyncio.timeout(wait):
        while not condition():
            await asyncio.sleep(0.005)


def pending(e: Engine) -> int:
    """Requests (or refusals) waiting behind the one being served, on the one connection."""
    return sum(len(conn.pending) for conn in e.server.connections)

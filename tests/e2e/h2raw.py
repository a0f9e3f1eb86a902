"""A raw-frame HTTP/2 server on loopback for answers no correct server sends (bad gzip,
DATA before HEADERS, a window ignored, floods): each client HEADERS frame is answered
with the bytes `script(stream id)` returns, built with `frame()`. `on_connect(transport)`
may write more (or stop reading) when a connection opens; `log` lists the client's
frames as (type, flags, stream, payload). PINGs are answered, as every live server's
HTTP/2 layer does, unless `pings` is False (a peer the network lost)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import hpack

__all__ = ["RawH2Server", "frame", "head_block"]


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(
        ">I", sid) + payload


def head_block(*fields: tuple[str, str], huffman: bool = True) -> bytes:
    """A header block from a fresh encoder (no dynamic table entries referenced)."""
    return bytes(hpack.Encoder().encode(list(fields), huffman=huffman))


class RawH2Server:
    def __init__(self, script: Callable[[int], bytes],
                 on_connect: Callable[[asyncio.Transport], None] | None = None,
                 settings: bytes = b"", pings: bool = True) -> None:
        self.script = script
        self.on_connect = on_connect
        self.settings = settings  # the first SETTINGS frame's payload
        self.pings = pings
        self.log: list[tuple[int, int, int, bytes]] = []
        self.connections = 0
        self.writers: list[Any] = []  # each connection's transport, to write more on
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Raw(self), host, port)
        self.url = f"http://{host}:{self.server.sockets[0].getsockname()[1]}"
        return self.url

    def frames(self, kind: int) -> list[tuple[int, int, int, bytes]]:
        return [entry for entry in self.log if entry[0] == kind]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


class _Raw(asyncio.Protocol):
    def __init__(self, server: RawH2Server) -> None:
        self.server = server
        self.buf = b""
        self.preface = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections += 1
        self.server.writers.append(transport)
        transport.write(frame(4, 0, 0, self.server.settings))
        if self.server.on_connect is not None:
            self.server.on_connect(transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.preface:
            if len(self.buf) < 24:
                return
            self.buf, self.preface = self.buf[24:], True
        while len(self.buf) >= 9:
            size = int.from_bytes(self.buf[:3], "big")
            kind, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            if len(self.buf) < 9 + size:
                return
            payload, self.buf = self.buf[9:9 + size], self.buf[9 + size:]
            self.server.log.append((kind, flags, sid, payload))
            if kind == 6 and not flags & 1 and self.server.pings:
                self.transport.write(frame(6, 1, 0, payload))
            elif kind == 1:
                out = self.server.script(sid)
                if out:
                    self.transport.write(out)

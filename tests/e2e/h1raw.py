"""A raw HTTP/1.1 upstream on loopback, in a thread of its own, for answers no correct
server sends: each request (head, and a body framed by Content-Length) is answered with
the pieces `script(body)` returns, written one by one (a float among them is a pause of
that many seconds; `None` closes the connection). After its pieces the connection stays
open for the next request, unless the script closed it. `requests` counts what came in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["Piece", "RawUpstream", "raw_upstream", "read_request"]

Piece = bytes | float | None
Script = Callable[[bytes], Sequence[Piece]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """A request's body (framed by its Content-Length), its head read past."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


class RawUpstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                body = await read_request(reader)
                self.requests += 1
                for piece in self.script(body):
                    if piece is None:
                        writer.close()
                        return
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def start(self) -> RawUpstream:
        started = threading.Event()

        async def boot() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(boot())
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        started.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextmanager
def raw_upstream(script: Script) -> Iterator[RawUpstream]:
    server = RawUpstream(script).start()
    try:
        yield server
    finally:
        server.stop()

"""Real servers on loopback for the tests: an aiohttp app in a thread of its own.

Each server runs its own event loop in a daemon thread, so a test can drive it with
a blocking client (the official `openai` SDK's sync client) or from another loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AppFactory = Callable[[], web.Application | Awaitable[web.Application]]
# Serves an app on a port and returns how to stop it (instead of aiohttp's AppRunner).
Starter = Callable[[web.Application, int], Awaitable[Callable[[], Awaitable[None]]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerThread:
    """An aiohttp application served on 127.0.0.1 from a background thread."""

    factory: AppFactory
    port: int = 0
    runner_options: dict[str, Any] = field(default_factory=dict)
    starter: Starter | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    app: web.Application | None = None
    _runner: web.AppRunner | None = None
    _stop: Callable[[], Awaitable[None]] | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        started = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            made = self.factory()
            self.app = await made if asyncio.iscoroutine(made) else made  # type: ignore[assignment]
            assert self.app is not None
            if self.starter is not None:
                self.port = self.port or free_port()
                self._stop = await self.starter(self.app, self.port)
                return
            options = {"handle_signals": False, "access_log": None, **self.runner_options}
            self._runner = web.AppRunner(self.app, **options)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port or free_port())
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(boot())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
                return
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    def stop(self) -> None:
        stop = self._stop or (self._runner.cleanup if self._runner is not None else None)
        if stop is not None:
            with contextlib.suppress(Exception):
                self.call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)


@contextmanager
def serve(factory: AppFactory, port: int = 0, **runner_options: Any) -> Iterator[ServerThread]:
    server = ServerThread(factory, port=port, runner_options=runner_options).start()
    try:
        yield server
    finally:
        server.stop()

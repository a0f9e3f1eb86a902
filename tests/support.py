"""Real servers on loopback for the tests, each in a thread of its own.

Each server runs its own event loop in a daemon thread, so a test can drive it with
a blocking client (the official `openai` SDK's sync client) or from another loop. The
gateway (an `http.interface.Application`) is served by FastServer; the emulator (an
aiohttp application) by aiohttp. Both listen on a socket bound here and handed over,
never on a port guessed free and bound again later (a race under xdist).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import tempfile
import threading
import wave
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.http.server import serve_fast

App = web.Application | GatewayApp
AppFactory = Callable[[], App | Awaitable[App]]


def reserved_socket() -> socket.socket:
    """A socket bound on 127.0.0.1 and never listening, kept open by the test: its port
    is refused to connections (a dead upstream) and never handed to anyone else's bind
    to port 0, yet a child process may bind and listen on it (both sides set
    SO_REUSEADDR, and Linux allows that while no socket listens). This is how a port is
    handed to a process that binds it itself, instead of guessing a free port and
    racing others for it. Use the `reserve_port` fixture, which closes it at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def bound_socket(port: int = 0) -> socket.socket:
    """A listening-ready TCP socket bound on 127.0.0.1 (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class ServerThread:
    """An application served on 127.0.0.1 from a background thread."""

    factory: AppFactory
    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    app: Any = None
    shutdown_grace: float = 5.0
    # An aiohttp app's (the emulator's) handlers still running when it stops are cancelled
    # after this: a test over does not wait out an emulator's `hang` fault (aiohttp's own
    # default waits up to 60 s for them; a 3 s hang added 2 s to each such test's teardown).
    handler_grace: float = 0.1
    _stop: Callable[[], Awaitable[None]] | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _boot(self) -> None:
        made = self.factory()
        self.app = await made if asyncio.iscoroutine(made) else made
        sock = bound_socket(self.port)
        self.port = int(sock.getsockname()[1])
        if isinstance(self.app, GatewayApp):
            server = await serve_fast(self.app, None, 0, backlog=128, sock=sock,
                                      max_body_bytes=self.app.settings.max_body_bytes)
            grace = self.shutdown_grace
            self._stop = lambda: server.shutdown(grace)
            return
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                               shutdown_timeout=self.handler_grace)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._stop = runner.cleanup

    def start(self) -> ServerThread:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._boot())
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
        if self._stop is not None:
            with contextlib.suppress(Exception):
                self.call(self._stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def load_keys_now(server: ServerThread) -> None:
    """Have a gateway's key directory read its store now, as its 0.5 s poll (or the admin
    API after a change) does, instead of waiting for the next poll: for keys a test makes
    in the store as its set-up. (The poll itself is the subject of its own tests, which
    wait for it.)"""
    async def refresh() -> None:
        directory = server.app.gateway.directory
        assert directory is not None
        await directory.refresh()

    server.call(refresh)


@contextmanager
def serve(factory: AppFactory, port: int = 0) -> Iterator[ServerThread]:
    server = ServerThread(factory, port=port).start()
    try:
        yield server
    finally:
        server.stop()


def silent_wav(seconds: float) -> bytes:
    """A WAV file of `seconds` of silence (mono, 16-bit, 8 kHz): an upload for the
    audio routes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * round(8000 * seconds))
    return buffer.getvalue()


_NOBODY = 65534


@contextmanager
def readable_directory() -> Iterator[Path]:
    """A directory readable by all (so that uid 65534 reaches it when the tests run as
    root), which a test may make unwritable; removed with what it holds."""
    top = Path(tempfile.mkdtemp(dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        top.chmod(0o755)
        for child in top.iterdir():
            child.unlink()
        top.rmdir()


@contextmanager
def as_nobody() -> Iterator[None]:
    """Root writes any file or directory: the effective user is nobody meanwhile (a
    module imported lazily must be imported before: nobody cannot read the venv)."""
    with as_user(_NOBODY):
        yield


@contextmanager
def as_user(uid: int) -> Iterator[None]:
    """The effective user (and group) is `uid` meanwhile, when the tests run as root."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)

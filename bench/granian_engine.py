"""The gateway served by granian (RSGI) instead of FastServer, for the engine benchmark.

    python -m bench.granian_engine -c config.yaml [--listen HOST:PORT | --uds PATH]

The same gateway (`create_app(settings)`, the settings from the same file) behind
granian's own process manager with one worker, HTTP/1.1 only, uvloop, granian's access
log off (the gateway writes its own). `bench/run.py` runs it as `gateway-1w-granian`
beside `gateway-1w`. What this engine cannot do that the gateway relies on is in
bench/README.md ("HTTP engine: FastServer vs granian").

`RsgiGateway` adapts any `interface.Application` to RSGI (`__rsgi__` per request,
`__rsgi_init__`/`__rsgi_del__` for the application's life cycle); the per-request work is
in `bench/granian_request.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/granian_engine.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.log import LogLevels
from granian.rsgi import Scope

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.http.interface import Application
from azure_openai_proxy.observability.accesslog import configure_logging
from bench.granian_request import BodyLimits, HTTPProtocol, answer

__all__ = ["RsgiGateway", "load_gateway", "main", "serve"]

# Printed on stdout by the worker once the application has started (tests wait for it).
READY = "granian-engine: ready"


class RsgiGateway:
    """An RSGI application serving `app`. Its hooks run in the worker: granian calls
    `__rsgi_init__` before its loop runs (embedded: while it runs) and `__rsgi_del__`
    after."""

    def __init__(self, app: Application, limits: BodyLimits | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limits = limits or BodyLimits()
        self.on_ready = on_ready
        self._hooks: set[asyncio.Task[None]] = set()

    def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> Coroutine[Any, Any, None]:
        return answer(self.app, scope, proto, self.limits)

    __call__ = __rsgi__  # the plain RSGI form too

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # granian starts serving right after this hook returns, before its loop turns
        # again: `on_ready` is called from the loop, so the socket accepts by then.
        if loop.is_running():  # embedded in a running loop
            self._spawn(loop, self._startup())
        else:  # a worker process: its loop runs once granian serves
            loop.run_until_complete(self.app.startup())
            if self.on_ready is not None:
                loop.call_soon(self.on_ready)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.is_running():
            self._spawn(loop, self._stop())
        else:
            loop.run_until_complete(self._stop())

    async def _startup(self) -> None:
        await self.app.startup()
        if self.on_ready is not None:
            self.on_ready()

    async def _stop(self) -> None:
        await self.app.shutdown()
        await self.app.cleanup()

    async def hooks_done(self) -> None:
        """Until the life-cycle hooks started on a running loop (embedded) have run."""
        while self._hooks:
            await asyncio.gather(*self._hooks)

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(work)
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)


def load_gateway(config_path: str) -> RsgiGateway:
    """The gateway of `config_path` as an RSGI application (granian's target loader:
    called in the worker process with the server's target, here the config path)."""
    settings = load_settings(config_path, dict(os.environ), {})
    configure_logging(settings.log_level)
    return RsgiGateway(create_app(settings), on_ready=_announce)


def _announce() -> None:
    print(READY, flush=True)


def serve(config_path: str, listen: str | None, uds: Path | None) -> None:
    """Run granian in this process (it spawns one worker) until SIGTERM/SIGINT."""
    settings = load_settings(config_path, dict(os.environ), {})
    host, _, port = (listen or settings.listen).rpartition(":")
    server = Granian(
        config_path,  # granian's "target": our loader makes the gateway from it
        address=host or "0.0.0.0", port=int(port), uds=uds, interface=Interfaces.RSGI,
        workers=1, loop=Loops.uvloop, http=HTTPModes.http1, websockets=False,
        backlog=2048, log_access=False, log_level=_granian_log_level(settings.log_level),
    )
    server.serve(target_loader=load_gateway)


def _granian_log_level(level: str) -> LogLevels:
    return LogLevels(level) if level in {"debug", "info", "warning", "error"} else LogLevels.info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.granian_engine",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, help="the gateway's config file")
    parser.add_argument("--listen", help="HOST:PORT (default: the config's `listen`)")
    parser.add_argument("--uds", type=Path, help="listen on this Unix socket instead")
    args = parser.parse_args(argv)
    serve(args.config, args.listen, args.uds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

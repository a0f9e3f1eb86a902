"""The upstream hop alone: a bare aiohttp proxy in front of nginx, one per transport.

    python bench/transport_bench.py [--duration 5] [--rounds 3] [--transports aiohttp,fast]

Each proxy is a child process (uvloop, one handler: read the body, `Transport.send` it
to the nginx upstream's chat URL, read the answer, reply with it). wrk loads each at 1
and 32 connections; rounds alternate between transports so that a noisy neighbour hurts
them alike, and the table shows medians. `pyreqwest` joins if it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/transport_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import systems
from bench.load import run_load
from bench.procs import HOST, Children, free_port, wait_until
from bench.systems import AZURE_KEY, System

TRANSPORTS = ("aiohttp", "fast", "pyreqwest")


def _transport(name: str) -> Any:
    from azure_openai_proxy.settings import UpstreamSettings

    settings = UpstreamSettings()
    if name == "aiohttp":
        from azure_openai_proxy.upstream.transport import AiohttpTransport

        return AiohttpTransport(settings)
    if name == "fast":
        from azure_openai_proxy.upstream.fast import FastTransport

        return FastTransport(settings)
    return _PyreqwestTransport()


class _PyreqwestTransport:
    """Just enough of a Transport for this benchmark (POST, bytes in, bytes out)."""

    def __init__(self) -> None:
        from pyreqwest.client import ClientBuilder

        self._client = ClientBuilder().build()

    async def send(self, request: Any) -> Any:
        response = await (
            self._client.post(request.url).headers(dict(request.headers)).body_bytes(request.body)
            .build().send()
        )
        body = bytes(await response.bytes())
        return _Answer(response.status, {"content-type": "application/json"}, body)

    async def close(self) -> None:
        await self._client.close()


class _Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self._body = status, headers, body

    async def read(self, limit: int) -> bytes:
        return self._body[:limit]

    def close(self) -> None:
        pass


def serve(port: int, upstream: str, name: str) -> None:
    """The bare proxy (child process mode)."""
    import uvloop
    from aiohttp import web

    from azure_openai_proxy.upstream.transport import UpstreamRequest

    async def main() -> None:
        transport = _transport(name)
        headers = {"api-key": AZURE_KEY, "content-type": "application/json"}

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            answer = await transport.send(UpstreamRequest("POST", upstream, headers, body))
            try:
                raw = await answer.read(1 << 24)
            finally:
                answer.close()
            return web.Response(status=answer.status, body=raw, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", forward)
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=4096).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def _have_pyreqwest() -> bool:
    try:
        import pyreqwest  # noqa: F401
    except ImportError:
        return False
    return True


def _start_proxy(children: Children, upstream: System, name: str) -> System:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port),
            "--upstream", upstream.url, "--transport", name]
    child = children.start(f"proxy-{name}", argv, port, env=systems._python_env())
    system = System(name, f"http://{HOST}:{port}/v1/chat/completions", {}, child)
    wait_until(child, lambda: systems._chat_ok(system), 30)
    return system


def measure(duration: float, rounds: int, names: list[str]) -> dict[str, dict[int, list[Any]]]:
    results: dict[str, dict[int, list[Any]]] = {name: {1: [], 32: []} for name in names}
    with tempfile.TemporaryDirectory(prefix="transport-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            upstream = systems.start_nginx_upstream(children)
            proxies = [_start_proxy(children, upstream, name) for name in names]
            for proxy in proxies:
                run_load(Path(tmp), proxy, 32, 2)  # warm-up
            for index in range(rounds):
                for proxy in proxies:
                    for conc in (1, 32):
                        result = run_load(Path(tmp), proxy, conc, duration)
                        results[proxy.name][conc].append(result)
                        print(f"round {index + 1} {proxy.name:10} @{conc:2}: {result.rps:8,.0f} req/s"
                              f"  p50 {result.p50_us:6.0f} µs  errors {result.errors}", flush=True)
        finally:
            children.close()
    return results


def table(results: dict[str, dict[int, list[Any]]]) -> str:
    lines = ["| transport | req/s @32 | p50 @32 | req/s @1 | p50 @1 |", "|---|---|---|---|---|"]
    for name, by_conc in results.items():
        cells = []
        for conc in (32, 1):
            runs = by_conc[conc]
            cells.append(f"{statistics.median(r.rps for r in runs):,.0f}")
            cells.append(f"{statistics.median(r.p50_us for r in runs):,.0f} µs")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transports", default="")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.upstream, args.transport)
        return
    if not systems.have_nginx():
        raise SystemExit("nginx is needed for the upstream")
    wanted = [n.strip() for n in args.transports.split(",") if n.strip()] or [
        n for n in TRANSPORTS if n != "pyreqwest" or _have_pyreqwest()
    ]
    unknown = set(wanted) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"--transports: unknown {sorted(unknown)}; choose from {', '.join(TRANSPORTS)}")
    print(table(measure(args.duration, args.rounds, wanted)))


if __name__ == "__main__":
    main()

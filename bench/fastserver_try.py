"""aiohttp's server against `FastServer` for the same gateway, before the engine is wired
into the CLI: the gateway-1w measurement of `bench/run.py`, engines interleaved.

    python bench/fastserver_try.py [--runs 3] [--duration 5]
    python bench/fastserver_try.py serve --engine fast -c gateway.yaml   (the child)

Each round starts nginx's bare proxy and the gateway on each engine (one worker, the
same config as `systems.start_gateway`: client keys, metrics, info access log), loads
each at 1 and 32 clients, and prints the medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/fastserver_try.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import systems
from bench.load import run_load
from bench.procs import HOST, Children, free_port, wait_until
from bench.systems import System

ENGINES = ("aiohttp", "fast")


async def _serve(config: str, engine: str) -> None:
    from aiohttp import web

    from azure_openai_proxy.server.app import RUNNER_OPTIONS, create_app
    from azure_openai_proxy.server.fastserver import serve_fast
    from azure_openai_proxy.server.runner import SettingsSource

    settings = SettingsSource(config).load()
    app = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if engine == "fast":
        server = await serve_fast(app, settings.host or None, settings.port, reuse_port=False,
                                  backlog=2048, shutdown_grace=settings.shutdown_grace_seconds)
        await stop.wait()
        await server.shutdown(settings.shutdown_grace_seconds)
        return
    runner = web.AppRunner(app, handle_signals=False, **RUNNER_OPTIONS)  # type: ignore[arg-type]
    await runner.setup()
    await web.TCPSite(runner, settings.host or None, settings.port, backlog=2048).start()
    await stop.wait()
    await runner.cleanup()


def _start(children: Children, upstream_port: int, engine: str) -> System:
    port = free_port()
    config = children.workdir / f"gateway-{engine}-{port}.yaml"
    config.write_text(
        f"listen: \"{HOST}:{port}\"\nclient_keys: [\"{systems.CLIENT_KEY}\"]\n"
        f"log_level: info\nmetrics: true\ndeployment_config:\n"
        f"  - {{deployment_name: {systems.DEPLOYMENT}, model_name: gpt-4o,"
        f" endpoint: \"http://{HOST}:{upstream_port}/\", api_key: \"{systems.AZURE_KEY}\","
        f" api_version: \"{systems.API_VERSION}\"}}\n"
    )
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--engine", engine,
            "-c", str(config)]
    child = children.start(f"gateway-{engine}", argv, port, env=systems._python_env())
    system = System(f"gateway-{engine}", f"http://{HOST}:{port}/v1/chat/completions",
                    systems._client_headers(), child)
    wait_until(child, lambda: systems._chat_ok(system), 30)
    return system


def _measure(workdir: Path, system: System, duration: float) -> dict[str, float]:
    run_load(workdir, system, 32, 1.0)
    one = run_load(workdir, system, 1, duration)
    many = run_load(workdir, system, 32, duration)
    print(f"  {system.name}: {many.rps:,.0f} req/s @32, p50 @1 {one.p50_us:.0f} µs, "
          f"errors {one.errors + many.errors}", flush=True)
    return {"rps32": many.rps, "p50_1": one.p50_us, "errors": one.errors + many.errors}


def compare(runs: int, duration: float) -> dict[str, list[dict[str, float]]]:
    found: dict[str, list[dict[str, float]]] = {name: [] for name in ("nginx", *ENGINES)}
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(Path(tmp))
        try:
            upstream = systems.start_nginx_upstream(children)
            assert upstream.child is not None
            port = upstream.child.port
            direct = _measure(children.workdir, upstream, duration)
            for round_ in range(runs):
                print(f"== round {round_ + 1}/{runs}", flush=True)
                proxy = systems.start_nginx_proxy(children, port)
                found["nginx"].append(_measure(children.workdir, proxy, duration))
                assert proxy.child is not None
                children.stop(proxy.child)
                for engine in ENGINES if round_ % 2 == 0 else ENGINES[::-1]:
                    system = _start(children, port, engine)
                    found[engine].append(_measure(children.workdir, system, duration))
                    assert system.child is not None
                    children.stop(system.child)
        finally:
            children.close()
    print(f"\ndirect: {direct['rps32']:,.0f} req/s @32, p50 @1 {direct['p50_1']:.0f} µs")
    print(f"medians over {runs} rounds ({duration:g} s per point):")
    nginx_rps = statistics.median(r["rps32"] for r in found["nginx"])
    for name, rows in found.items():
        rps = statistics.median(r["rps32"] for r in rows)
        p50 = statistics.median(r["p50_1"] for r in rows)
        each = ", ".join(f"{r['rps32']:,.0f}" for r in rows)
        print(f"  {name:8} {rps:9,.0f} req/s @32 ({rps / nginx_rps:.2f}x nginx)   "
              f"p50 @1 {p50:5.0f} µs (added {p50 - direct['p50_1']:.0f} µs)   all @32: {each}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("--engine", choices=ENGINES, required=True)
    serve.add_argument("-c", "--config", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from azure_openai_proxy.server.accesslog import configure_logging
        from azure_openai_proxy.server.runner import run_loop

        configure_logging("info")
        run_loop(_serve(args.config, args.engine))
        return 0
    compare(args.runs, args.duration)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

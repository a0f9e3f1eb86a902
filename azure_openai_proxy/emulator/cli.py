"""`azure-openai-proxy emulate ...`: serve the emulator until SIGINT or SIGTERM.

    emulate --listen 127.0.0.1:8001 --api-key KEY [--config emulator.yaml]
            [--ttft-ms N] [--token-ms N]

The only place that reads the environment: `AZURE_OPENAI_EMULATOR_KEY` is the key
when `--api-key` is not given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import replace

from aiohttp import web

from azure_openai_proxy.emulator.app import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatorConfig, load_emulator_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azure-openai-proxy emulate", description="Serve a local Azure OpenAI emulator."
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8001", help="host:port (default %(default)s)"
    )
    parser.add_argument("--api-key", help="the key clients must send (KEY1)")
    parser.add_argument("--config", help="YAML file of deployments (default: the built-in set)")
    parser.add_argument("--ttft-ms", type=float, help="time to first token, milliseconds")
    parser.add_argument("--token-ms", type=float, help="delay per generated token, milliseconds")
    return parser


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen: expected host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    key = args.api_key or os.environ.get("AZURE_OPENAI_EMULATOR_KEY")
    config = load_emulator_config(args.config, api_key=key)
    if args.ttft_ms is not None:
        config = replace(config, ttft_ms=args.ttft_ms)
    if args.token_ms is not None:
        config = replace(config, token_ms=args.token_ms)
    return config


async def _serve(config: EmulatorConfig, host: str, port: int) -> None:
    runner = web.AppRunner(create_emulator_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    names = ", ".join(d.name for d in config.deployments)
    print(f"Azure OpenAI emulator listening on http://{host}:{port} (deployments: {names})",
          flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    """Run the emulator; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        host, port = _host_port(args.listen)
        config = build_config(args)
    except (ValueError, OSError) as exc:
        print(f"emulate: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(config, host, port))
    except OSError as exc:
        print(f"emulate: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0

"""`azure-openai-proxy demo`: the bundled Azure emulator and the gateway, wired together.

The gateway holds the emulator's key (server-side) and accepts one demo client key, so
the printed `curl` line and `openai` snippet work exactly as printed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import SecretStr, ValidationError

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.observability.accesslog import configure_logging
from azure_openai_proxy.runtime.runner import run_loop, start_server
from azure_openai_proxy.settings import DeploymentSettings, Settings

__all__ = ["DEMO_CLIENT_KEY", "DEMO_MODELS", "demo_parser", "demo_settings", "main"]

DEMO_CLIENT_KEY = "demo-client-key"
_EMULATOR_KEY = "demo-azure-key"

# OpenAI model name -> the emulator's default deployment name.
DEMO_MODELS = {
    "gpt-4o": "gpt-4o",
    "gpt-4o-mini": "gpt-4o-mini",
    "gpt-3.5-turbo": "gpt-35-turbo",
    "o3-mini": "o3-mini",
    "gpt-3.5-turbo-instruct": "gpt-35-turbo-instruct",
    "text-embedding-3-small": "text-embedding-3-small",
    "whisper-1": "whisper",
    "tts-1": "tts",
    "dall-e-3": "dall-e-3",
}


def demo_settings(listen: str, emulator_url: str) -> Settings:
    deployments = tuple(
        DeploymentSettings(
            model_name=model,
            deployment_name=deployment,
            endpoint=emulator_url,
            api_key=SecretStr(_EMULATOR_KEY),
            api_version="2025-04-01-preview",
        )
        for model, deployment in DEMO_MODELS.items()
    )
    return Settings(
        listen=listen,
        deployments=deployments,
        default_endpoint=emulator_url,
        default_api_key=SecretStr(_EMULATOR_KEY),
        client_keys=(SecretStr(DEMO_CLIENT_KEY),),
    )


def _curl(base: str) -> str:
    return (
        f"curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_CLIENT_KEY}' "
        "-H 'Content-Type: application/json' "
        """-d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}'"""
    )


def _snippet(base: str) -> str:
    return (
        "python3 -c 'from openai import OpenAI; "
        f'c = OpenAI(base_url="{base}/v1", api_key="{DEMO_CLIENT_KEY}"); '
        'print(c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", '
        """"content": "Hello"}]).choices[0].message.content)'"""
    )


def _instructions(base: str) -> str:
    return f"""
azure-openai-proxy demo: the gateway at {base}/v1 in front of the bundled Azure emulator.
Client key: {DEMO_CLIENT_KEY}

Try it with curl:

{_curl(base)}

Or with the openai SDK (pip install openai):

{_snippet(base)}

Press Ctrl-C to stop.
""".strip("\n")


async def _run(settings: Settings, emulator_host: str, emulator_port: int) -> None:
    from azure_openai_proxy.emulator import create_emulator_app, load_emulator_config

    emulator = web.AppRunner(
        create_emulator_app(load_emulator_config(None, api_key=_EMULATOR_KEY)),
        access_log=None, handle_signals=False,
    )
    await emulator.setup()
    await web.TCPSite(emulator, emulator_host, emulator_port).start()

    stop_gateway, port = await start_server(create_app(settings), settings, reuse_port=False)
    print(_instructions(f"http://{_shown(settings.host)}:{port}"), flush=True)  # :0's too

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await stop_gateway()
    await emulator.cleanup()


def _shown(host: str) -> str:
    """Where a client on this machine reaches `host`, as a URL writes it (`[::1]`)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def demo_parser() -> argparse.ArgumentParser:
    """The demo's flags (the healthcheck reads a running demo's --listen with it)."""
    parser = argparse.ArgumentParser(
        prog="azure-openai-proxy demo",
        description="Run the gateway in front of the bundled Azure OpenAI emulator.",
    )
    parser.add_argument("-l", "--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where the gateway listens (default %(default)s; in a container: "
                             "--listen 0.0.0.0:8080 to reach it through -p 8080:8080)")
    parser.add_argument("--emulator-listen", default="127.0.0.1:8001", metavar="HOST:PORT")
    parser.add_argument("--log-level", default="info")
    return parser


def _checked(listen: str, emulator_listen: str) -> Settings:
    """The demo's settings; a ValueError naming the flag whose address cannot be used."""
    host, _, port = emulator_listen.rpartition(":")
    problem = (f"--emulator-listen must be HOST:PORT with a port from 1 to 65535, e.g. "
               f"127.0.0.1:8001 (not {emulator_listen!r})")
    try:
        if port.isascii() and port.isdigit():
            return demo_settings(listen, f"http://{host}:{port}")
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"][:1] == ("listen",):  # the settings' own words for it
            problem = f"--listen {error['msg'].removeprefix('Value error, ')} (not {listen!r})"
    raise ValueError(problem)


def main(argv: Sequence[str]) -> int:
    args = demo_parser().parse_args(argv)
    try:  # both addresses, before anything listens (`--listen 8080` is an easy slip)
        settings = _checked(args.listen, args.emulator_listen)
    except ValueError as exc:
        print(f"azure-openai-proxy demo: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        host, _, port = args.emulator_listen.rpartition(":")  # [::1]: a URL's, not a socket's
        run_loop(_run(settings, host.removeprefix("[").removesuffix("]"), int(port)))
    except OSError as exc:
        print(f"azure-openai-proxy demo: {exc}", file=sys.stderr)
        return 1
    return 0

"""Command line: `azure-openai-proxy [serve] [-c FILE] [-l HOST:PORT] [-s] ...`,
`check-config`, `emulate`, `demo`. The only module that reads `os.environ`.

The Go azure-openai-proxy's flags (`-c/--configFile`, `-l/--listen`, `-s/--cors`,
`-v/--version`) work unchanged, so its users can switch by changing the image.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from azure_openai_proxy import __version__
from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.settings import Settings

__all__ = ["main"]

_COMMANDS = ("serve", "check-config", "emulate", "demo")
_SERVER_FLAGS = ("max_connections", "head_timeout", "body_timeout", "keepalive_timeout")


def _serve_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An OpenAI-compatible gateway in front of Azure OpenAI.",
        epilog="Other commands: check-config, emulate, demo (see `azure-openai-proxy CMD -h`).",
    )
    parser.add_argument("-c", "--configFile", "--config", dest="config", metavar="FILE",
                        help="config file (default: ./config.yaml if it exists)")
    parser.add_argument("-l", "--listen", metavar="HOST:PORT",
                        help="listen address (default 0.0.0.0:8080)")
    parser.add_argument("-s", "--cors", action="store_true", default=None,
                        help="answer CORS preflights and allow browsers to call the gateway")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (one port)")
    parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error")
    parser.add_argument("--server-engine", choices=("fast",),
                        help="HTTP server engine (only `fast`: see the README's 'The HTTP server')")
    parser.add_argument("--max-connections", type=int, metavar="N",
                        help="connections per worker before new ones get a 503 (default 10000)")
    parser.add_argument("--head-timeout", type=float, metavar="S",
                        help="seconds for a request head to arrive, from its first byte")
    parser.add_argument("--body-timeout", type=float, metavar="S",
                        help="seconds for a request body to arrive, from its head")
    parser.add_argument("--keepalive-timeout", type=float, metavar="S",
                        help="seconds a connection may idle between requests")
    parser.add_argument("--watch-config", action="store_true", default=None,
                        help="reload when the config file changes (polled every 2 s)")
    parser.add_argument("--allow-open", action="store_true", default=None,
                        help="start even though server-side keys are set and no client keys are")
    parser.add_argument("-v", "--version", action="version", version=f"azure-openai-proxy {__version__}")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name in ("listen", "cors", "workers", "allow_open", "watch_config"):
        value = getattr(args, name, None)
        if value is not None:
            flags[name] = value
    if getattr(args, "log_level", None):
        flags["log_level"] = args.log_level
    server = {name: getattr(args, name) for name in _SERVER_FLAGS
              if getattr(args, name, None) is not None}
    if server:
        flags["server"] = server
    return flags


def _config_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    default = Path("config.yaml")
    return str(default) if default.is_file() else None


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    settings = load_settings(_config_path(args.config), environ, _flags(args))
    if not settings.deployments and settings.default_endpoint is None:
        raise ConfigError(
            "nothing to serve: set AZURE_OPENAI_ENDPOINT (and AZURE_OPENAI_MODEL_MAPPER), "
            "or give a config file with deployment_config (-c config.yaml)"
        )
    return settings


def _serve(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _serve_parser("azure-openai-proxy").parse_args(argv)
    try:
        settings = load(args, environ)
    except ConfigError as exc:
        print(f"azure-openai-proxy: config error: {exc}", file=sys.stderr)
        return 2
    from azure_openai_proxy.runtime.runner import SettingsSource, refuse_open_relay, run

    refusal = refuse_open_relay(settings)
    if refusal:
        print(f"azure-openai-proxy: {refusal}", file=sys.stderr)
        return 2
    source = SettingsSource(_config_path(args.config), dict(environ), _flags(args))
    return run(settings, source)


def _check_config(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="azure-openai-proxy check-config",
        description="Validate the configuration and print the routing table (keys masked).",
    )
    parser.add_argument("-c", "--configFile", "--config", dest="config", metavar="FILE")
    args = parser.parse_args(argv)
    args.listen = args.cors = args.workers = args.allow_open = args.log_level = None
    args.server_engine = None
    args.watch_config = None
    try:
        settings = load(args, environ)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from azure_openai_proxy.runtime.runner import describe

    print(describe(settings))
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ) if environ is None else environ
    command = argv[0] if argv and argv[0] in _COMMANDS else "serve"
    rest = argv[1:] if argv and argv[0] == command else argv
    if command == "emulate":
        from azure_openai_proxy.emulator.cli import main as emulate

        return emulate(rest)
    if command == "demo":
        from azure_openai_proxy.runtime.demo import main as demo

        return demo(rest)
    if command == "check-config":
        return _check_config(rest, environ)
    return _serve(rest, environ)

"""Command line: `azure-openai-proxy [serve] [-c FILE] [-l HOST:PORT] [-s] ...`,
`check-config`, `emulate`, `demo`, `healthcheck`, `keys`, `teams`. The only module that reads `os.environ`.

The Go azure-openai-proxy's flags (`-c/--configFile`, `-l/--listen`, `-s/--cors`,
`-v/--version`) work unchanged, so its users can switch by changing the image.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure_openai_proxy import __version__

if TYPE_CHECKING:  # (config and settings import pydantic: a second of start-up, under
    from azure_openai_proxy.settings import Settings  # load, before any handler is in place)

__all__ = ["main"]

_COMMANDS = ("serve", "check-config", "emulate", "demo", "healthcheck", "keys", "teams", "usage")
# The emulator's own default (emulator/cli.py), for a healthcheck of `emulate` without --listen.
_EMULATOR_LISTEN = "127.0.0.1:8001"
_SERVER_FLAGS = ("max_connections", "head_timeout", "body_timeout", "keepalive_timeout")


def _serve_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An OpenAI-compatible gateway in front of Azure OpenAI.",
        epilog="Other commands: check-config, emulate, demo, healthcheck, keys, teams, usage "
               "(see `azure-openai-proxy CMD -h`).",
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


def _config_path(explicit: str | None, environ: Mapping[str, str],
                 cwd: Path | None = None) -> str | None:
    """The config file a server started in `cwd` (default: here) reads: `-c`, else
    `CONFIGFILE` (the Go tool's flag, which viper's AutomaticEnv reads from the
    environment too), else ./config.yaml if it is there."""
    root = cwd or Path()
    explicit = explicit or environ.get("CONFIGFILE", "").strip() or None
    if explicit:
        return str(root / explicit)
    default = root / "config.yaml"
    return str(default) if default.is_file() else None


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    from azure_openai_proxy.config import ConfigError, load_settings

    settings = load_settings(_config_path(args.config, environ), environ, _flags(args))
    if not settings.deployments and settings.default_endpoint is None:
        raise ConfigError(
            "nothing to serve: set AZURE_OPENAI_ENDPOINT (and AZURE_OPENAI_MODEL_MAPPER), "
            "or give a config file with deployment_config (-c config.yaml)"
        )
    return settings


class _Terminated(BaseException):
    """A SIGTERM before the server's own handlers are in place: the stop of a server
    that does not serve yet (SIGINT's is KeyboardInterrupt). Exits 0, as a stop does."""


def _terminated(_signum: int, _frame: object) -> None:
    raise _Terminated


def _serve(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    # SIGTERM's default action would end it with no exit code of a stop (-15); the
    # server's own handler replaces this one (runtime/runner.py).
    signal.signal(signal.SIGTERM, _terminated)
    # SIGHUP (reload) waits until the handlers are in place (runtime/runner.py): its
    # default action would end the gateway, or every worker, while it starts.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    args = _serve_parser("azure-openai-proxy").parse_args(argv)
    from azure_openai_proxy.config import ConfigError
    from azure_openai_proxy.runtime.watch import signature

    path = _config_path(args.config, environ)
    seen = signature(path) if path else None  # before it is read: a change after is seen
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
    source = SettingsSource(path, dict(environ), _flags(args))
    return run(settings, source, seen)


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
    from azure_openai_proxy.config import ConfigError

    try:
        settings = load(args, environ)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from azure_openai_proxy.runtime.runner import describe

    print(describe(settings))
    return 0


def _healthcheck(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="azure-openai-proxy healthcheck",
        description="Exit 0 if the server answers GET /health, else 1 (Docker's HEALTHCHECK). "
                    "It probes --listen if given, else the address the server running as "
                    "process --pid (default 1: a container's server) was told to listen on by "
                    "its flags, environment or config file, else the one this command's own "
                    "environment and config file give. 0.0.0.0 is probed on 127.0.0.1.",
    )
    parser.add_argument("-c", "--configFile", "--config", dest="config", metavar="FILE")
    parser.add_argument("-l", "--listen", metavar="HOST:PORT")
    parser.add_argument("--pid", type=int, default=1, help="the server's process id (default 1)")
    parser.add_argument("--timeout", type=_seconds, default=3.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    from azure_openai_proxy.config import ConfigError

    try:
        listen, any_answer = _health_target(args, environ)
        host, port = _probe_address(listen)
    except (ConfigError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    healthy, detail = _probe(host, port, args.timeout, any_answer)
    shown = f"[{host}]" if ":" in host else host
    print(f"{'healthy' if healthy else 'unhealthy'}: http://{shown}:{port}/health {detail}")
    return 0 if healthy else 1


_MAX_PROBE_SECONDS = 86_400  # a day: a socket refuses 1e10 (time_t in nanoseconds)


def _seconds(text: str) -> float:
    """A socket's timeout: a number of seconds above 0 and at most a day (nan, inf,
    -1 or 1e10 was a traceback from the probe)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= _MAX_PROBE_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {_MAX_PROBE_SECONDS}")
    return seconds


def _health_target(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, bool]:
    """(listen address, whether any HTTP answer will do): the emulator has no /health."""
    from azure_openai_proxy.config import load_settings

    if args.listen:
        return args.listen, False
    server = _server_command(args.pid)
    if server is None:
        return load_settings(_config_path(args.config, environ), environ, {}).listen, False
    command, rest, cwd = server
    if command == "emulate":
        listener = argparse.ArgumentParser(add_help=False)
        listener.add_argument("--listen", default=_EMULATOR_LISTEN)
        return str(listener.parse_known_args(rest)[0].listen), True
    if command == "demo":
        from azure_openai_proxy.runtime.demo import demo_parser

        return str(demo_parser().parse_known_args(rest)[0].listen), False
    served = _serve_parser("azure-openai-proxy").parse_known_args(rest)[0]
    return load_settings(_config_path(served.config, environ, cwd), environ, _flags(served)).listen, False


def _server_command(pid: int) -> tuple[str, list[str], Path] | None:
    """(command, its arguments, working directory) of process `pid` when it is an
    `azure-openai-proxy serve|demo|emulate`, else None."""
    proc = Path("/proc") / str(pid)
    try:
        argv = [arg.decode(errors="replace") for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        cwd = Path(os.readlink(proc / "cwd"))
    except OSError:
        return None
    for i, arg in enumerate(argv):
        if Path(arg).name == "azure-openai-proxy":
            rest = argv[i + 1:]
            break
        if arg == "-m" and argv[i + 1:i + 2] == ["azure_openai_proxy"]:
            rest = argv[i + 2:]
            break
    else:
        return None
    rest = rest[:-1] if rest and rest[-1] == "" else rest  # cmdline ends with a NUL
    command = rest[0] if rest and rest[0] in _COMMANDS else "serve"
    if command not in ("serve", "demo", "emulate"):
        return None
    return command, rest[1:] if rest and rest[0] == command else rest, cwd


def _probe_address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    if int(port) == 0:  # (a probe of port 0 read as a refused connection)
        raise ValueError(f"listen address {listen!r} has port 0: the server took a free port "
                         "when it started (each worker its own), which its log's `listening "
                         "on` lines name; probe it with --listen HOST:PORT")
    host = host.strip("[]")
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
    return wildcard.get(host, host), int(port)


def _probe(host: str, port: int, timeout: float, any_answer: bool) -> tuple[bool, str]:
    import http.client  # (a tenth of a second of every command's start, imported here)

    # http.client, not urllib: a container's HTTP(S)_PROXY must not carry the probe away.
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"failed: {exc.__class__.__name__}: {exc}"
    finally:
        connection.close()
    return status == 200 or (any_answer and status < 500), f"answered {status}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        return _command(argv, environ)
    except BrokenPipeError:
        # What it printed was piped to a reader that left (`keys list | head`): stop
        # quietly, as other commands do, not with a traceback. Python would flush stdout
        # again at exit and print another: what is left goes nowhere (Python's docs' way).
        with contextlib.suppress(OSError, ValueError):  # (a stdout without a descriptor)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # Ctrl-C while it waits (a database locked, a config on a pipe): 130, as a shell
        # counts a SIGINT, without Python's traceback of wherever it waited.
        return 130
    except _Terminated:  # (a server stopped as it started, before it served)
        return 0


def _command(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
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
    if command == "healthcheck":
        return _healthcheck(rest, environ)
    if command in ("keys", "teams"):
        from azure_openai_proxy.runtime.keys_cli import main as keys

        return keys(command, rest, environ, _config_path(None, environ))
    if command == "usage":
        from azure_openai_proxy.runtime.usage_cli import main as usage

        return usage(rest, environ, _config_path(None, environ))
    return _serve(rest, environ)

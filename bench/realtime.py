"""Realtime (issue 14): many WebSocket sessions relayed by one gateway worker.

    python -m bench.realtime                         # 200 sessions x 50 events/s, 10 s
    python -m bench.realtime --sessions 50 --rate 20 --duration 5

An echo upstream (a `websockets` server in a process of its own, standing in for Azure's
realtime endpoint: `session.created`, then every message sent back as it is) is loaded
twice by the same clients, in this process: directly, then through the gateway (one
worker, its CLI, client keys and the access log on, a v1 deployment pointing at the echo).
Each session sends an `input_audio_buffer.append` of 20 ms of PCM16 (1.3 KB of JSON) every
1/rate seconds on a fixed schedule and times each echo. Reported: the echo's round trip
(p50/p90/p99) direct and through the gateway (the difference is what the gateway adds to an
event, both ways), events that came back, the gateway's RSS idle / with every session open /
after they closed, and its CPU time per relayed event. Bounded: `--duration` seconds of
load per phase (plus at most `_OPEN_TIMEOUT` to open the sessions and `_DRAIN_SECONDS` to
drain), `sessions * rate * duration` events at most; every child is killed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bench.procs import HOST, Children, cpu_seconds, free_port, http_ok, rss_mb, wait_until

REPO = Path(__file__).resolve().parent.parent
AZURE_KEY = "bench-azure-key-0123456789"
CLIENT_KEY = "sk-bench-client-key"
MODEL = "gpt-realtime"
_OPEN_TIMEOUT = 60.0
_DRAIN_SECONDS = 5.0
_OPENING = 32  # sessions opened at a time
_EVENT = json.dumps({"type": "input_audio_buffer.append",
                     "audio": base64.b64encode(bytes(960)).decode()})


# -- the echo upstream (a child process: `python -m bench.realtime --echo PORT`) -----------


async def _echo(connection: ServerConnection) -> None:
    if connection.request is None or connection.request.headers.get("api-key") != AZURE_KEY:
        await connection.close(1008, "no key")
        return
    await connection.send(json.dumps({"type": "session.created", "session": {"model": MODEL}}))
    with contextlib.suppress(Exception):
        async for message in connection:
            await connection.send(message)


async def _serve_echo(port: int) -> None:
    async with serve(_echo, HOST, port, compression=None, max_size=16 * 1024 * 1024):
        await asyncio.Future()


# -- the load ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    failed_sessions: int = 0
    open_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pick(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else None

        return {"sent": self.sent, "echoed": len(ordered), "failed_sessions": self.failed_sessions,
                "open_s": round(self.open_seconds, 2),
                "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
                "mean_ms": round(statistics.fmean(ordered) * 1000, 3) if ordered else None}


async def _open(url: str, headers: dict[str, str], gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        connection = await connect(url, additional_headers=headers, compression=None,
                                   open_timeout=_OPEN_TIMEOUT, max_size=16 * 1024 * 1024)
        await asyncio.wait_for(connection.recv(), _OPEN_TIMEOUT)  # session.created
        return connection


async def _session(connection: ClientConnection, phase: Phase, rate: float, start: float,
                   duration: float) -> None:
    pending: deque[float] = deque()

    async def receive() -> None:
        while True:
            await connection.recv()
            phase.latencies.append(time.perf_counter() - pending.popleft())

    reader = asyncio.ensure_future(receive())
    try:
        count = int(duration * rate)
        for index in range(count):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(time.perf_counter())
            phase.sent += 1
            await connection.send(_EVENT)
        deadline = time.perf_counter() + _DRAIN_SECONDS
        while pending and time.perf_counter() < deadline and not reader.done():
            await asyncio.sleep(0.01)
    finally:
        reader.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)


async def run_phase(name: str, url: str, headers: dict[str, str], sessions: int, rate: float,
                    duration: float, during: Any = None) -> Phase:
    phase = Phase(name)
    gate = asyncio.Semaphore(_OPENING)
    began = time.perf_counter()
    opened = await asyncio.gather(*(_open(url, headers, gate) for _ in range(sessions)),
                                  return_exceptions=True)
    phase.open_seconds = time.perf_counter() - began
    connections = [c for c in opened if isinstance(c, ClientConnection)]
    phase.failed_sessions = sessions - len(connections)
    start = time.perf_counter() + 0.5
    tasks = [asyncio.ensure_future(_session(c, phase, rate, start + i / (rate * sessions), duration))
             for i, c in enumerate(connections)]  # spread over one period, not in a burst
    if during is not None:
        await asyncio.sleep(0.5 + duration / 2)
        during()
    await asyncio.gather(*tasks, return_exceptions=True)
    return phase


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second per session")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per phase")
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        asyncio.run(_serve_echo(args.echo))
        return {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    children = Children(workdir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        echo_port = free_port()
        echo = children.start("echo", [sys.executable, "-m", "bench.realtime", "--echo",
                                       str(echo_port)], echo_port, env=env)
        wait_until(echo, lambda: _listening(echo_port), 30)
        port = free_port()
        config = workdir / "gateway.yaml"
        config.write_text(
            f"listen: \"{HOST}:{port}\"\nclient_keys: [\"{CLIENT_KEY}\"]\nlog_level: info\n"
            "deployment_config:\n"
            f"  - {{deployment_name: {MODEL}, model_name: {MODEL}, api: v1,"
            f" endpoint: \"http://{HOST}:{echo_port}/\", api_key: \"{AZURE_KEY}\"}}\n")
        gateway = children.start("gateway", [sys.executable, "-m", "azure_openai_proxy", "-c",
                                             str(config), "--workers", "1"], port, env=env)
        wait_until(gateway, lambda: http_ok(f"http://{HOST}:{port}/health"), 30)
        worker = _worker_pid(gateway.pid)
        result: dict[str, Any] = {"sessions": args.sessions, "rate": args.rate,
                                  "duration_s": args.duration, "cpus": os.cpu_count(),
                                  "loadavg_before": os.getloadavg()}
        direct = asyncio.run(run_phase(
            "direct", f"ws://{HOST}:{echo_port}/openai/v1/realtime?model={MODEL}",
            {"api-key": AZURE_KEY}, args.sessions, args.rate, args.duration))
        idle = rss_mb(worker)
        cpu_before = cpu_seconds(worker)
        loaded: list[float] = []
        through = asyncio.run(run_phase(
            "gateway", f"ws://{HOST}:{port}/v1/realtime?model={MODEL}",
            {"Authorization": f"Bearer {CLIENT_KEY}"}, args.sessions, args.rate, args.duration,
            during=lambda: loaded.append(rss_mb(worker))))
        cpu = cpu_seconds(worker) - cpu_before
        result.update({
            "direct": direct.summary(), "gateway": through.summary(),
            "gateway_rss_mb": {"idle": round(idle, 1),
                               "sessions_open": round(loaded[0], 1) if loaded else None,
                               "after": round(rss_mb(worker), 1)},
            "gateway_cpu_us_per_event": round(cpu / max(1, len(through.latencies)) * 1e6, 1),
            "loadavg_after": os.getloadavg(),
        })
        if direct.latencies and through.latencies:
            result["added_ms"] = {
                q: round(through.summary()[q] - direct.summary()[q], 3)
                for q in ("p50_ms", "p90_ms", "p99_ms")}
        print(json.dumps(result, indent=2))
        return result
    finally:
        children.close()


def _listening(port: int) -> bool:
    import socket

    with socket.create_connection((HOST, port), timeout=1):
        return True


def _worker_pid(parent: int) -> int:
    """The serving process: the CLI runs one worker under a supervisor, or serves itself."""
    from bench.procs import descendants

    found = descendants(parent)
    return found[-1] if len(found) > 1 else parent


if __name__ == "__main__":
    main()

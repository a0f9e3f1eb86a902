"""Load generators: wrk (a Lua script POSTs the chat body) or, without wrk, an asyncio
client. Both run for a fixed time, bounded in count too, and report the same numbers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.systems import CHAT_BODY, System

# A bound on any one load run, whatever its duration says.
MAX_REQUESTS = 5_000_000


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    tool: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"errors":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_script(workdir: Path, system: System) -> Path:
    headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"
                        for k, v in system.headers.items())
    path = workdir / f"wrk-{system.name}.lua"
    path.write_text(_LUA.format(body=_lua_string(json.dumps(CHAT_BODY)), headers=headers))
    return path


def run_wrk(workdir: Path, system: System, concurrency: int, seconds: float) -> LoadResult:
    script = wrk_script(workdir, system)
    duration = max(1, round(seconds))
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(script), system.url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {system.name}: {done.stdout}{done.stderr}")
    raw = json.loads(line[6:])
    elapsed = raw["duration_us"] / 1e6
    return LoadResult(concurrency, elapsed, raw["requests"], raw["errors"],
                      raw["requests"] / elapsed, raw["p50"], raw["p90"], raw["p99"], raw["p999"],
                      raw["mean"], "wrk")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _asyncio_load(system: System, concurrency: int, seconds: float) -> LoadResult:
    body = json.dumps(CHAT_BODY).encode()
    headers = {"Content-Type": "application/json", **system.headers}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    deadline = started + seconds
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) < MAX_REQUESTS:
                sent = time.perf_counter()
                try:
                    async with session.post(system.url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - sent) * 1e6)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    mean = sum(latencies) / len(latencies) if latencies else 0.0
    return LoadResult(concurrency, elapsed, len(latencies), errors, len(latencies) / elapsed,
                      percentile(latencies, 50), percentile(latencies, 90),
                      percentile(latencies, 99), percentile(latencies, 99.9), mean, "asyncio")


def run_load(workdir: Path, system: System, concurrency: int, seconds: float) -> LoadResult:
    if have_wrk():
        return run_wrk(workdir, system, concurrency, seconds)
    return asyncio.run(_asyncio_load(system, concurrency, seconds))

"""Streaming measurements: time to first token and per chunk, one stream at a time; and
many concurrent open streams on one gateway worker (peak RSS, none stalled).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson

from bench.load import percentile
from bench.procs import peak_rss_mb, rss_mb
from bench.systems import CHAT_BODY, System


@dataclass
class StreamTiming:
    ttft_ms: float
    chunk_ms: float
    chunks: int
    done: bool


@dataclass
class StreamStats:
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    chunk_mean_ms: float
    failures: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class ManyStreamsResult:
    streams: int
    completed: int
    stalled: int
    peak_open: int
    max_gap_s: float
    seconds: float
    rss_before_mb: float
    rss_peak_sampled_mb: float
    vm_hwm_mb: float
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _stream_body(model: str, max_tokens: int) -> bytes:
    return json.dumps({**CHAT_BODY, "model": model, "stream": True, "max_tokens": max_tokens}).encode()


def _content_of(line: bytes) -> bool | None:
    """True for a frame carrying content, False for another frame, None at `[DONE]`."""
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    choices = frame.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def _one_stream(session: aiohttp.ClientSession, system: System, body: bytes) -> StreamTiming:
    headers = {"Content-Type": "application/json", **system.headers}
    sent = time.perf_counter()
    stamps: list[float] = []
    done = False
    async with session.post(system.url, data=body, headers=headers) as response:
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            content = _content_of(line)
            if content is None:
                done = True
                break
            if content:
                stamps.append(time.perf_counter())
    if not stamps:
        return StreamTiming(0.0, 0.0, 0, False)
    per_chunk = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
    return StreamTiming((stamps[0] - sent) * 1000, per_chunk * 1000, len(stamps), done)


async def _ttft(system: System, streams: int, model: str, max_tokens: int) -> StreamStats:
    body = _stream_body(model, max_tokens)
    timeout = aiohttp.ClientTimeout(total=30)
    timings: list[StreamTiming] = []
    failures = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for index in range(streams + 2):
            try:
                timing = await _one_stream(session, system, body)
            except (aiohttp.ClientError, TimeoutError):
                failures += 1
                continue
            if index < 2:
                continue  # warm-up: connections, caches
            if timing.done and timing.chunks:
                timings.append(timing)
            else:
                failures += 1
    ttfts = sorted(t.ttft_ms for t in timings)
    chunk = sum(t.chunk_ms for t in timings) / len(timings) if timings else 0.0
    return StreamStats(len(timings), percentile(ttfts, 50), percentile(ttfts, 99), chunk, failures)


def measure_ttft(system: System, streams: int, model: str, max_tokens: int) -> StreamStats:
    return asyncio.run(_ttft(system, streams, model, max_tokens))


async def _many(system: System, pid: int, streams: int, model: str, max_tokens: int,
                ramp_s: float, stall_s: float, limit_s: float) -> ManyStreamsResult:
    body = _stream_body(model, max_tokens)
    headers = {"Content-Type": "application/json", **system.headers}
    result = ManyStreamsResult(streams, 0, 0, 0, 0.0, 0.0, rss_mb(pid), 0.0, 0.0)
    open_now = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=limit_s, sock_read=stall_s)

    async def one(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal open_now
        await asyncio.sleep(ramp_s * index / streams)
        last = time.perf_counter()
        opened = False
        try:
            async with session.post(system.url, data=body, headers=headers) as response:
                async for line in response.content:
                    now = time.perf_counter()
                    result.max_gap_s = max(result.max_gap_s, now - last)
                    last = now
                    if not opened:
                        opened = True
                        open_now += 1
                        result.peak_open = max(result.peak_open, open_now)
                    if line.startswith(b"data: [DONE]"):
                        result.completed += 1
                        return
        except (aiohttp.ClientError, TimeoutError) as exc:
            if len(result.errors) < 5:
                result.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if opened:
                open_now -= 1
        result.stalled += 1

    async def sample(stop: asyncio.Event) -> None:
        while not stop.is_set():
            result.rss_peak_sampled_mb = max(result.rss_peak_sampled_mb, rss_mb(pid))
            await asyncio.sleep(0.1)

    started = time.perf_counter()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(stop))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one(i, session) for i in range(streams)))
    stop.set()
    await sampler
    result.seconds = time.perf_counter() - started
    result.vm_hwm_mb = peak_rss_mb(pid)
    return result


def many_streams(system: System, pid: int, streams: int, model: str, max_tokens: int,
                 ramp_s: float, stall_s: float = 10.0, limit_s: float = 120.0) -> ManyStreamsResult:
    """`streams` concurrent streams opened over `ramp_s`; a stream that does not end with
    `[DONE]`, or is silent for `stall_s`, counts as stalled."""
    return asyncio.run(_many(system, pid, streams, model, max_tokens, ramp_s, stall_s, limit_s))

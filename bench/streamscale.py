"""Streams at scale (issue 15): N concurrent long streams through one gateway worker,
the Go seed, and straight to the upstream, side by side in one run.

    python -m bench.streamscale --n 1000,5000,10000 [--frames 50] [--interval-ms 75]
                                [--ramp 5] [--procs 1] [--only direct,gateway-1w,seed]
    python -m bench.streamscale --n 1000,10000:2000:20   # N=10,000 at 2 s a frame, 20 s ramp
    python -m bench.streamscale --n 1000 --http2 --only direct,gateway-1w   # HTTP/2 upstream

An N may carry its own pacing, `N:INTERVAL_MS` or `N:INTERVAL_MS:RAMP_S` (a paced
upstream is started for each interval used).

The upstream is `bench.paced` (nginx + echo: Azure's frame sequence, content frames
`--interval-ms` apart). Each system is started fresh for each N; the raw-socket load
generator (`bench.streamload`) opens N streams over `--ramp` seconds. Per system and N:
completed / stalled / errors, time to first token, the time added to each frame against
direct, peak RSS (VmHWM) and KB per stream, CPU µs per relayed content frame (utime +
stime from /proc over the run, divided by the content frames the clients received), and
the CPU per frame of the load generator and of the upstream (so neither is mistaken for
the system's limit). See bench/README.md, "Streams at scale (issue 15)".

`--http2`: the gateway talks HTTP/2 to the paced upstream (`upstream.http2`, h2c on a
second port of the same nginx), its streams multiplexed on a few connections (the row is
`gateway-1w-h2`; its peak open counts one descriptor a stream, not two). Direct and the
control streams stay on HTTP/1.1.

`--tls`: the default path to Azure: nginx also listens with `ssl http2` (a certificate
made per run); the gateway (default upstream settings) and the seed go to https and trust
it through `SSL_CERT_FILE`; each row names the protocol nginx saw (`gateway-1w (https, h2
by ALPN)`). Direct and the control streams stay on plain HTTP/1.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/streamscale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import systems
from bench.load import percentile
from bench.paced import (
    PacedStream,
    TlsListen,
    frames_per_stream,
    have_echo_module,
    protocol_label,
    protocols,
    start_paced,
    tls_listen,
)
from bench.procs import (
    HOST,
    Child,
    Children,
    PeakDescriptors,
    cpu_seconds,
    descendants,
    free_port,
    peak_rss_mb,
    rss_mb,
    runqueue_wait_seconds,
    wait_until,
)
from bench.streamload import LoadPlan, LoadShare, raise_fd_limit, run_load, start_time

SEED_GZ = systems.REPO.parent / "shared" / "peers" / "azure-openai-proxy-seed.gz"
SYSTEMS = ("direct", "gateway-1w", "seed")


@dataclass
class ScaleRow:
    """One system at one N (see the module docstring for each figure)."""

    system: str
    streams: int
    completed: int
    stalled: int
    errors: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    lateness_ms: float  # mean over the completed streams of their frames' mean lateness
    # The same for the control streams: a few straight to the upstream during the run.
    control_lateness_ms: float | None
    added_per_frame_ms: float | None  # lateness minus the control streams' lateness
    rss_before_mb: float
    peak_rss_mb: float
    kb_per_stream: float
    cpu_s: float
    # Of the run's seconds, how long the system was runnable but waiting for a CPU
    # (the machine's contention, not the system's own cost).
    runqueue_wait_s: float
    cpu_us_per_frame: float
    content_frames: int
    loadgen_cpu_us_per_frame: float
    upstream_cpu_us_per_frame_sent: float
    seconds: float
    error_samples: list[str]
    # Of `stalled`: never connected (the accept queue dropped the SYN), and connected but
    # never answered a byte (streamload's docstring).
    stalled_unconnected: int = 0
    stalled_unanswered: int = 0
    # The most streams the system held open at once: its descriptors over the run's
    # (sampled twice a second) less those before, two per relayed stream (one direct).
    peak_open: int = 0
    interval_ms: float = 0.0  # the pacing of this run: between content frames
    ramp_s: float = 0.0  # over which the streams were opened


def request_bytes(path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request that closes its connection after the answer."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def stream_body() -> bytes:
    return json.dumps({**systems.CHAT_BODY, "stream": True, "max_tokens": 256}).encode()


def _mean_ms(values: list[float]) -> float | None:
    return statistics.fmean(values) * 1000 if values else None


def summarize(system: str, streams: int, share: LoadShare, cpu_s: float, upstream_cpu_s: float,
              frames_sent: int, rss_before: float, peak: float,
              control: LoadShare | None = None, runqueue_wait_s: float = 0.0) -> ScaleRow:
    """The row of one run, from the load generator's results and /proc's figures; the
    control streams (straight to the upstream at the same time) give the upstream's own
    lateness, which the time added per frame is measured against."""
    ttfts = sorted(t * 1000 for t in share.ttft_s)
    lateness = _mean_ms(share.lateness_s) or 0.0
    control_lateness = _mean_ms(control.lateness_s) if control is not None else None
    added = (lateness - control_lateness
             if control_lateness is not None and share.completed else None)
    frames = share.content_frames
    return ScaleRow(
        system=system, streams=streams, completed=share.completed, stalled=share.stalled,
        errors=share.errors, ttft_p50_ms=percentile(ttfts, 50), ttft_p99_ms=percentile(ttfts, 99),
        lateness_ms=lateness, control_lateness_ms=control_lateness, added_per_frame_ms=added,
        rss_before_mb=rss_before,
        peak_rss_mb=peak, kb_per_stream=max(0.0, peak - rss_before) * 1024 / streams if peak else 0.0,
        cpu_s=cpu_s, runqueue_wait_s=runqueue_wait_s,
        cpu_us_per_frame=cpu_s / frames * 1e6 if frames else 0.0,
        content_frames=frames,
        loadgen_cpu_us_per_frame=share.cpu_s / frames * 1e6 if frames else 0.0,
        upstream_cpu_us_per_frame_sent=upstream_cpu_s / frames_sent * 1e6 if frames_sent else 0.0,
        seconds=share.seconds, error_samples=share.error_samples,
        stalled_unconnected=share.stalled_unconnected, stalled_unanswered=share.stalled_unanswered,
    )


def _accepting(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1):
        return True


@dataclass
class _Target:
    name: str
    port: int
    path: str
    headers: dict[str, str]
    child: Child | None  # None: direct (the upstream itself)


def _start_gateway(children: Children, upstream_port: int, http2: bool = False,
                   tls: TlsListen | None = None) -> _Target:
    port = free_port()
    config = systems._gateway_config(children, port, tls.port if tls else upstream_port,
                                     scheme="https" if tls else "http")
    if http2:
        config.write_text(config.read_text() + "upstream: {http2: true}\n")
    argv = [sys.executable, "-m", "azure_openai_proxy", "-c", str(config), "--workers", "1"]
    env = systems._python_env() | ({"SSL_CERT_FILE": str(tls.cert)} if tls else {})
    child = children.start(f"gateway-{port}", argv, port, env=env)
    wait_until(child, lambda: _accepting(port), 30)
    return _Target("gateway-1w-h2" if http2 else "gateway-1w", port, "/v1/chat/completions",
                   {"Authorization": f"Bearer {systems.CLIENT_KEY}"}, child)


def _start_seed(children: Children, binary: Path, upstream_port: int,
                tls: TlsListen | None = None) -> _Target:
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("LISTEN", "API_BASE", "CORS")}
    if tls:  # Go's crypto/x509 reads SSL_CERT_FILE on Linux
        env["SSL_CERT_FILE"] = str(tls.cert)
    env.update({"AZURE_OPENAI_ENDPOINT": f"https://{HOST}:{tls.port}" if tls
                else f"http://{HOST}:{upstream_port}",
                "AZURE_OPENAI_MODEL_MAPPER": f"gpt-4o={systems.DEPLOYMENT}",
                "AZURE_OPENAI_API_VER": systems.API_VERSION})
    child = children.start(f"seed-{port}", [str(binary), "-l", f"{HOST}:{port}"], port, env=env)
    wait_until(child, lambda: _accepting(port), 30)
    return _Target("seed", port, "/v1/chat/completions",
                   {"Authorization": f"Bearer {systems.AZURE_KEY}"}, child)


def _unpack_seed(workdir: Path, gz: Path) -> Path | None:
    if not gz.is_file():
        return None
    import gzip
    import shutil

    binary = workdir / "azure-openai-proxy-seed"
    with gzip.open(gz) as packed, binary.open("wb") as out:
        shutil.copyfileobj(packed, out)
    binary.chmod(0o755)
    return binary


@dataclass(frozen=True)
class ScalePoint:
    """One N of a run, with its own pacing where given (None: the plan's)."""

    streams: int
    interval_ms: float | None = None
    ramp_s: float | None = None


@dataclass(frozen=True)
class ScalePlan:
    counts: tuple[int | ScalePoint, ...]
    shape: PacedStream
    ramp_s: float
    procs: int
    only: tuple[str, ...]
    seed_gz: Path
    stall_s: float = 10.0
    upstream_workers: int = 1  # nginx workers of the paced upstream (reuseport past 1)
    upstream_port: int = 0  # set once the upstream runs
    http2: bool = False  # the gateway talks h2c to the upstream (on `upstream_h2_port`)
    upstream_h2_port: int = 0
    tls: bool = False  # the gateway and the seed go to `upstream_tls` (https)
    upstream_tls: TlsListen | None = None


def _one(plan: ScalePlan, target: _Target, upstream_pids: list[int], streams: int) -> ScaleRow:
    pid = target.child.pid if target.child is not None else None
    measured = [pid] if pid else upstream_pids
    rss_before = rss_mb(pid) if pid else 0.0
    cpu0 = cpu_seconds(pid) if pid else 0.0
    wait0 = sum(runqueue_wait_seconds(p) for p in measured)
    up0 = sum(cpu_seconds(p) for p in upstream_pids)
    load = LoadPlan(HOST, target.port, request_bytes(target.path, target.port, target.headers,
                                                     stream_body()),
                    streams, plan.ramp_s, plan.shape.interval_ms / 1000, stall_s=plan.stall_s,
                    limit_s=plan.shape.content_frames * plan.shape.interval_ms / 1000 + 30,
                    procs=plan.procs)
    log = plan.upstream_tls.log if plan.upstream_tls else None
    since = protocols(log)[1] if log and pid else 0
    with PeakDescriptors(measured) as descriptors:
        share, control = _load(plan, load, target, streams)
    cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    wait = sum(runqueue_wait_seconds(p) for p in measured) - wait0
    upstream_cpu = sum(cpu_seconds(p) for p in upstream_pids) - up0
    peak = peak_rss_mb(pid) if pid else 0.0
    sent = share.completed * frames_per_stream(plan.shape)
    if control is not None:
        sent += control.completed * frames_per_stream(plan.shape)
    row = summarize(target.name, streams, share, cpu, upstream_cpu, sent, rss_before, peak, control,
                    wait)
    row.interval_ms, row.ramp_s = plan.shape.interval_ms, plan.ramp_s
    # A relayed stream holds two descriptors over HTTP/1.1, one over HTTP/2 (multiplexed).
    per_stream = 2 if pid and not target.name.endswith("-h2") else 1
    if log and pid:  # what nginx saw: the row says it
        seen = protocols(log, since)[0]
        row.system = f"{target.name} {protocol_label(seen)}"
        per_stream = 1 if set(seen) == {"HTTP/2.0"} else per_stream
    row.peak_open = (descriptors.peak - descriptors.before) // per_stream
    if target.name == "direct":  # the upstream is the system: its CPU is the row's
        row.cpu_s = upstream_cpu
        row.cpu_us_per_frame = upstream_cpu / row.content_frames * 1e6 if row.content_frames else 0.0
    return row


def _load(plan: ScalePlan, load: LoadPlan, target: _Target,
          streams: int) -> tuple[LoadShare, LoadShare | None]:
    """The load of one row; through a proxy, with control streams straight to the
    upstream at the same time."""
    if target.child is None:
        return run_load(load), None
    control_plan = replace(load, port=plan.upstream_port, streams=max(20, streams // 50),
                           procs=1, request=request_bytes(
                               systems.AZURE_PATH, plan.upstream_port,
                               {"api-key": systems.AZURE_KEY}, stream_body()))
    start_at = start_time(load.procs + 1)
    with ThreadPoolExecutor(2) as threads:
        main_run = threads.submit(run_load, load, start_at)
        control_run = threads.submit(run_load, control_plan, start_at)
        return main_run.result(), control_run.result()


def run_matrix(plan: ScalePlan, say: Callable[[str], object] = print) -> list[ScaleRow]:
    """Every system of `plan.only` at every N of `plan.counts`; the rows, direct first."""
    if not have_echo_module():
        say("streamscale: nginx or its echo module is missing "
            "(apt-get install -y nginx libnginx-mod-http-echo); skipped")
        return []
    raise_fd_limit()
    rows: list[ScaleRow] = []
    with tempfile.TemporaryDirectory(prefix="aoai-streamscale-") as tmp:
        children = Children(Path(tmp))
        try:
            seed = _unpack_seed(Path(tmp), plan.seed_gz) if "seed" in plan.only else None
            if "seed" in plan.only and seed is None:
                say(f"seed: {plan.seed_gz} is absent; the Go seed is skipped")
            upstreams: dict[PacedStream, tuple[int, list[int], int, TlsListen | None]] = {}
            for point in plan.counts:
                at = paced_at(plan, point)
                if at.shape not in upstreams:
                    upstreams[at.shape] = _start_upstream(children, at)
                upstream_port, upstream_pids, h2_port, tls = upstreams[at.shape]
                at = replace(at, upstream_port=upstream_port, upstream_h2_port=h2_port,
                             upstream_tls=tls)
                streams = at_streams(point)
                for name in SYSTEMS:
                    if name not in plan.only or (name == "seed" and seed is None):
                        continue
                    if name == "direct":
                        target = _Target("direct", upstream_port, systems.AZURE_PATH,
                                         {"api-key": systems.AZURE_KEY}, None)
                    elif name == "gateway-1w":
                        target = (_start_gateway(children, h2_port, http2=True) if plan.http2
                                  else _start_gateway(children, upstream_port, tls=tls))
                    else:
                        assert seed is not None
                        target = _start_seed(children, seed, upstream_port, tls)
                    try:
                        row = _one(at, target, upstream_pids, streams)
                    finally:
                        if target.child is not None:
                            children.stop(target.child)
                    rows.append(row)
                    say(_line(row))
                    # Let the machine settle after a large run (closing thousands of sockets).
                    time.sleep(min(2.0, streams / 1000))
        finally:
            children.close()
    return rows


def at_streams(point: int | ScalePoint) -> int:
    return point if isinstance(point, int) else point.streams


def paced_at(plan: ScalePlan, point: int | ScalePoint) -> ScalePlan:
    """`plan` with the pacing of `point` (its own interval and ramp where it has them)."""
    if isinstance(point, int):
        return plan
    shape = plan.shape if point.interval_ms is None else replace(plan.shape,
                                                                 interval_ms=point.interval_ms)
    return replace(plan, shape=shape, ramp_s=plan.ramp_s if point.ramp_s is None else point.ramp_s)


def _start_upstream(children: Children, plan: ScalePlan
                    ) -> tuple[int, list[int], int, TlsListen | None]:
    """A paced upstream for `plan.shape`: its port, its worker processes, its h2c port (0
    unless `plan.http2`) and its TLS listener (None unless `plan.tls`)."""
    h2_port = free_port() if plan.http2 else 0
    tls = tls_listen(children.workdir) if plan.tls else None
    port, master = start_paced(children, plan.shape, workers=plan.upstream_workers,
                               h2_port=h2_port or None, tls=tls)
    child = children.running[-1]
    wait_until(child, lambda: _accepting(port), 10)
    # nginx listens before it forks its workers: without them, the upstream's CPU
    # columns would read 0 (they did on a busy machine).
    wait_until(child, lambda: len(descendants(master)) > plan.upstream_workers, 10)
    return port, [p for p in descendants(master) if p != master], h2_port, tls


def _line(row: ScaleRow) -> str:
    return (f"  {row.system} N={row.streams:,} ({row.interval_ms:g} ms, {row.ramp_s:g} s ramp): "
            f"{row.completed:,} completed, {_stalled(row)} stalled, "
            f"{row.errors} errors; TTFT p50 {row.ttft_p50_ms:.1f} ms p99 {row.ttft_p99_ms:.1f} ms; "
            f"lateness {row.lateness_ms:.2f} ms (control {row.control_lateness_ms or 0:.2f} ms); "
            f"CPU {row.cpu_us_per_frame:.1f} µs/frame, {row.cpu_s:.1f} s, waited for a CPU "
            f"{row.runqueue_wait_s:.1f} s; "
            f"VmHWM {row.peak_rss_mb:.0f} MB; peak open {row.peak_open:,}; "
            f"load gen {row.loadgen_cpu_us_per_frame:.1f} µs/frame"
            + (f"; errors e.g. {row.error_samples[:2]}" if row.error_samples else ""))


def _stalled(row: ScaleRow) -> str:
    """The stalled count, and where they stopped when any did."""
    if not row.stalled:
        return "0"
    return (f"{row.stalled:,} ({row.stalled_unconnected:,} never connected, "
            f"{row.stalled_unanswered:,} never answered)")


def table(rows: list[ScaleRow]) -> str:
    """The markdown table of bench/README.md's "Streams at scale" section."""
    head = ("| system | N | interval / ramp | peak open | completed | stalled | errors | TTFT p50 | TTFT p99 "
            "| added per frame "
            "| peak RSS | KB per stream | CPU µs per frame | CPU s / waited s | load gen µs per frame "
            "| upstream µs per frame sent |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        added = "" if r.added_per_frame_ms is None else f"{r.added_per_frame_ms:+.2f} ms"
        memory = (f"{r.peak_rss_mb:.0f} MB", f"{r.kb_per_stream:.1f}") if r.system != "direct" else ("", "")
        lines.append(
            f"| {r.system} | {r.streams:,} | {r.interval_ms:,g} ms / {r.ramp_s:g} s "
            f"| {r.peak_open:,} | {r.completed:,} | {_stalled(r)} | {r.errors:,} "
            f"| {r.ttft_p50_ms:.1f} ms | {r.ttft_p99_ms:.1f} ms | {added} | {memory[0]} | {memory[1]} "
            f"| {r.cpu_us_per_frame:.1f} | {r.cpu_s:.1f} / {r.runqueue_wait_s:.1f} "
            f"| {r.loadgen_cpu_us_per_frame:.1f} "
            f"| {r.upstream_cpu_us_per_frame_sent:.1f} |")
    return "\n".join(lines)


def counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1 or max(counts) > 20_000:
        raise argparse.ArgumentTypeError("--n: counts between 1 and 20,000, comma-separated")
    return counts


def points(text: str) -> tuple[int | ScalePoint, ...]:
    """`--n`: counts, each optionally `N:INTERVAL_MS` or `N:INTERVAL_MS:RAMP_S`."""
    parsed: list[int | ScalePoint] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        fields = part.split(":")
        try:
            if len(fields) > 3:
                raise ValueError(part)
            streams = counts(fields[0])[0]
            numbers = [float(f) for f in fields[1:]]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--n: {part!r} is not N, N:INTERVAL_MS or N:INTERVAL_MS:RAMP_S") from None
        if not all(0 < n <= 10_000 for n in numbers):
            raise argparse.ArgumentTypeError(f"--n: {part!r}: interval and ramp above 0")
        parsed.append(streams if not numbers else ScalePoint(streams, *numbers))
    if not parsed:
        raise argparse.ArgumentTypeError("--n: counts between 1 and 20,000, comma-separated")
    return tuple(parsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streamscale",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=points, default=(1000, 5000, 10_000),
                        help="concurrent streams per run, comma-separated (default 1000,5000,10000); "
                             "N:INTERVAL_MS[:RAMP_S] gives one its own pacing")
    parser.add_argument("--frames", type=int, default=50, help="content frames per stream")
    parser.add_argument("--interval-ms", type=float, default=75.0, help="between content frames")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which streams open")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--upstream-workers", type=int, default=1,
                        help="nginx workers pacing the streams (one holds ~19,900 at a 20,000 fd limit)")
    parser.add_argument("--only", default=",".join(SYSTEMS), help=f"of {', '.join(SYSTEMS)}")
    parser.add_argument("--http2", action="store_true",
                        help="the gateway talks HTTP/2 (h2c) to the upstream: upstream.http2")
    parser.add_argument("--tls", action="store_true",
                        help="the gateway (default upstream settings) and the seed go over https")
    parser.add_argument("--seed", type=Path, default=SEED_GZ, help="the Go seed's .gz")
    parser.add_argument("--results-dir", type=Path,
                        default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if set(only) - set(SYSTEMS):
        parser.error(f"--only: choose from {', '.join(SYSTEMS)}")
    if args.tls and args.http2:
        parser.error("--tls runs the default settings: not with --http2")
    if not 1 <= args.frames <= 1000 or not 1 <= args.interval_ms <= 10_000:
        parser.error("--frames 1..1000, --interval-ms 1..10000")
    plan = ScalePlan(args.n, PacedStream(args.frames, args.interval_ms), args.ramp,
                     max(1, args.procs), only, args.seed,
                     upstream_workers=min(8, max(1, args.upstream_workers)), http2=args.http2,
                     tls=args.tls)
    rows = run_matrix(plan)
    print("\n" + table(rows))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / "streamscale.json"
    with contextlib.suppress(OSError):
        out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                   "loadavg": os.getloadavg(), "rows": [asdict(r) for r in rows]},
                                  indent=2))
        print(f"raw numbers: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

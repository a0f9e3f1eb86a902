"""Where a relayed frame's wall-clock CPU goes (issue 15): user vs system time, system
calls per frame, garbage collections, and the fixed cost per stream vs the marginal cost
per frame, for the gateway (one worker) and the Go seed.

    python -m bench.framecpu --n 1000 --frames 10,100 [--systems gateway,seed]
                             [--strace 3] [--gc] [--repeat 1]

Each (frames, system) pair is one run of `bench.streamscale`'s load (the paced nginx
upstream, N streams over `--ramp` seconds) against a freshly started system. Printed per
run: utime and stime of the system over the run (from /proc/PID/stat) per content frame
received; with `--strace S`, `strace -c -f` attached for S seconds from the middle of the
ramp (its own overhead inflates the run's CPU, so its runs are separate from the timed
ones: each strace run is an extra run after the timed one); with `--gc` (the gateway
only), the collections per generation and their time (`bench.gcwatch`). With two or more
`--frames` values the fit CPU = a·streams + b·content frames is printed per system:
a is the fixed cost per stream (set-up, the 10 frames that are not content, close), b the
marginal cost of one more content frame (its share of the annotation frames included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/framecpu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import systems
from bench.paced import PacedStream, have_echo_module, start_paced
from bench.procs import HOST, Child, Children, descendants, free_port, wait_until
from bench.streamload import LoadPlan, raise_fd_limit, run_load
from bench.streamscale import SEED_GZ, _accepting, _unpack_seed, request_bytes, stream_body

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class FrameRun:
    system: str
    streams: int
    frames: int  # content frames per stream asked of the upstream
    completed: int
    content_frames: int
    utime_s: float
    stime_s: float
    loadavg: str
    gc: dict[str, object] | None = None
    strace: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def us_per_frame(self) -> tuple[float, float, float]:
        f = self.content_frames or 1
        return (self.utime_s / f * 1e6, self.stime_s / f * 1e6,
                (self.utime_s + self.stime_s) / f * 1e6)


def times(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds of every thread of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _gateway(children: Children, upstream_port: int, gc_out: Path | None) -> Child:
    port = free_port()
    config = systems._gateway_config(children, port, upstream_port)
    head = ([sys.executable, "-m", "bench.gcwatch", str(gc_out)] if gc_out
            else [sys.executable, "-m", "azure_openai_proxy"])
    child = children.start(f"gateway-{port}", [*head, "-c", str(config), "--workers", "1"],
                           port, env=systems._python_env())
    wait_until(child, lambda: _accepting(port), 30)
    return child


def _seed(children: Children, binary: Path, upstream_port: int) -> Child:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN", "API_BASE", "CORS")}
    env.update({"AZURE_OPENAI_ENDPOINT": f"http://{HOST}:{upstream_port}",
                "AZURE_OPENAI_MODEL_MAPPER": f"gpt-4o={systems.DEPLOYMENT}",
                "AZURE_OPENAI_API_VER": systems.API_VERSION})
    child = children.start(f"seed-{port}", [str(binary), "-l", f"{HOST}:{port}"], port, env=env)
    wait_until(child, lambda: _accepting(port), 30)
    return child


def _attach(argv: list[str], after_s: float, seconds: float) -> threading.Thread:
    """Run `argv` (a tracer or sampler of the system) for `seconds`, `after_s` from now."""
    def attach() -> None:
        time.sleep(after_s)
        subprocess.run(["timeout", "-s", "INT", str(seconds), *argv], stdout=subprocess.DEVNULL,
                       stderr=sys.stderr if os.environ.get("FRAMECPU_DEBUG") else
                       subprocess.DEVNULL, check=False)
    thread = threading.Thread(target=attach, daemon=True)
    thread.start()
    return thread


def one_run(children: Children, name: str, upstream_port: int, shape: PacedStream, streams: int,
            ramp_s: float, seed: Path | None, gc_on: bool, strace_s: float,
            pyspy_s: float = 0.0, pyspy_out: str = "", perf_out: str = "",
            strace_from: float | None = None) -> FrameRun:
    gc_out = children.workdir / f"gc-{time.monotonic_ns()}.json" if gc_on else None
    child = (_gateway(children, upstream_port, gc_out) if name == "gateway"
             else _seed(children, seed or Path("/nonexistent"), upstream_port))
    pid = child.pid
    assert pid is not None
    path = "/v1/chat/completions"
    headers = ({"Authorization": f"Bearer {systems.CLIENT_KEY}"} if name == "gateway"
               else {"Authorization": f"Bearer {systems.AZURE_KEY}"})
    load = LoadPlan(HOST, child.port, request_bytes(path, child.port, headers, stream_body()),
                    streams, ramp_s, shape.interval_ms / 1000, stall_s=10.0,
                    limit_s=shape.content_frames * shape.interval_ms / 1000 + 30, procs=1)
    loadavg = Path("/proc/loadavg").read_text().split()[0]
    strace_out = children.workdir / f"strace-{pid}.txt"
    tracer = (_attach(["strace", "-c", "-f", "-p", str(pid), "-o", str(strace_out)],
                      2.0 + ramp_s / 2 if strace_from is None else strace_from, strace_s)
              if strace_s else None)
    if perf_out:  # CPU samples only (user and kernel), unlike py-spy's wall-clock ones
        tracer = _attach(["perf", "record", "-F", "997", "-g", "-p", str(pid), "-o",
                          str(Path(f"{perf_out}-{name}").resolve()), "--", "sleep", "5"],
                         2.0 + ramp_s / 2, 10)
    if pyspy_s and name == "gateway":  # collapsed stacks, read with flamegraph tools
        tracer = _attach([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid),
                          "-d", str(int(pyspy_s)), "-r", "200", "--native", "-f", "raw",
                          "-o", str(Path(pyspy_out or "pyspy.txt").resolve())],
                         2.0 + ramp_s / 2, pyspy_s + 5)
    u0, s0 = times(pid)
    t0 = time.monotonic()
    share = run_load(load)
    t1 = time.monotonic()
    u1, s1 = times(pid)
    if tracer is not None:
        tracer.join(max(strace_s, pyspy_s, 10) + 15)
    children.stop(child)
    report = json.loads(gc_out.read_text()) if gc_out and gc_out.is_file() else None
    if report is not None:
        report = _in_window(report, t0, t1)
    return FrameRun(name, streams, shape.content_frames, share.completed, share.content_frames,
                    u1 - u0, s1 - s0, loadavg, report,
                    strace_out.read_text() if strace_out.is_file() else "")


def _in_window(report: dict[str, object], t0: float, t1: float) -> dict[str, object]:
    """The collections that ended inside the run: count and CPU seconds per generation.
    Where the worker froze its start-up heap, the collection just before (`settle_heap`'s
    own, which can fall after the port first accepts) is start-up's, not the run's."""
    events = report.pop("events")
    assert isinstance(events, list)
    froze = bool(report.get("frozen"))
    count, cpu = [0, 0, 0], [0.0, 0.0, 0.0]
    for at, generation, took, frozen in events:
        if t0 <= at <= t1 and (frozen or not froze):
            count[generation] += 1
            cpu[generation] += took
    return {**report, "run_count": count, "run_cpu_s": cpu}


def fit(runs: list[FrameRun]) -> tuple[float, float] | None:
    """Least squares of cpu = a·streams + b·content_frames: (a µs per stream, b µs per frame)."""
    if len({r.frames for r in runs}) < 2:
        return None
    xs = [(float(r.completed), float(r.content_frames), r.utime_s + r.stime_s) for r in runs]
    s11 = sum(a * a for a, _, _ in xs)
    s12 = sum(a * b for a, b, _ in xs)
    s22 = sum(b * b for _, b, _ in xs)
    y1 = sum(a * y for a, _, y in xs)
    y2 = sum(b * y for _, b, y in xs)
    det = s11 * s22 - s12 * s12
    if det == 0:
        return None
    return ((y1 * s22 - y2 * s12) / det * 1e6, (s11 * y2 - s12 * y1) / det * 1e6)


def _say(run: FrameRun) -> None:
    user, system, total = run.us_per_frame
    print(f"{run.system} N={run.streams} frames={run.frames} load={run.loadavg}: "
          f"{run.completed} completed, {run.content_frames} content frames; "
          f"user {user:.1f} + sys {system:.1f} = {total:.1f} µs/frame "
          f"({run.utime_s:.2f} + {run.stime_s:.2f} s)", flush=True)
    if run.gc:
        run_cpu = run.gc["run_cpu_s"]
        gc_cpu = sum(run_cpu) if isinstance(run_cpu, list) else 0.0
        print(f"  gc during the run: {run.gc['run_count']} collections, {gc_cpu:.3f} CPU s "
              f"({gc_cpu / (run.content_frames or 1) * 1e6:.1f} µs/frame); whole life: "
              f"{json.dumps(run.gc)}", flush=True)
    if run.strace:
        print("  strace -c (a window of the run):\n" + run.strace, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--frames", default="10,100")
    parser.add_argument("--systems", default="gateway,seed")
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--strace", type=float, default=0.0, help="seconds of strace -c per run")
    parser.add_argument("--strace-from", type=float, default=None,
                        help="attach strace this many seconds after the load starts "
                        "(default: mid-ramp; 0 with a long --strace counts a whole run)")
    parser.add_argument("--gc", action="store_true", help="count the gateway's collections")
    parser.add_argument("--pyspy", type=float, default=0.0,
                        help="seconds of py-spy (--native) on the gateway per run")
    parser.add_argument("--perf", default="", help="perf record 5 s of each run to PERF-system")
    parser.add_argument("--pyspy-out", default="pyspy.txt", help="py-spy's collapsed stacks")
    args = parser.parse_args(argv)
    if not have_echo_module():
        print("framecpu: nginx or its echo module is missing; skipped")
        return 0
    raise_fd_limit()
    names = args.systems.split(",")
    runs: list[FrameRun] = []
    with tempfile.TemporaryDirectory(prefix="aoai-framecpu-") as tmp:
        children = Children(Path(tmp))
        try:
            seed = _unpack_seed(Path(tmp), SEED_GZ) if "seed" in names else None
            for frames in (int(f) for f in args.frames.split(",")):
                shape = PacedStream(content_frames=frames)
                port, master = start_paced(children, shape)
                upstream = children.running[-1]
                wait_until(upstream, partial(_accepting, port), 10)
                assert descendants(master)
                for _ in range(args.repeat):
                    for name in names:
                        if name == "seed" and seed is None:
                            continue
                        run = one_run(children, name, port, shape, args.n, args.ramp, seed,
                                      args.gc and name == "gateway", args.strace,
                                      args.pyspy, args.pyspy_out, args.perf,
                                      args.strace_from)
                        runs.append(run)
                        _say(run)
                children.stop(upstream)
        finally:
            children.close()
    for name in names:
        ab = fit([r for r in runs if r.system == name and r.completed])
        if ab is not None:
            print(f"{name}: fixed {ab[0]:.0f} µs per stream, marginal {ab[1]:.1f} µs per "
                  "content frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Instructions per stream of the REAL gateway worker, real sockets (issue 15): the
gateway's CLI run under `valgrind --tool=callgrind`, fed by `bench.streamscale`'s load
(the paced nginx upstream, `bench.streamload`), at a rate callgrind carries.

    python -m bench.realcount --n 100,300 --ramp 40 [--frames 1] [--out /tmp/rc]
    python -m bench.realcount --tls [--upstream-http2 false]   # over https (default settings)
    python -m bench.realcount --perf [--no-record] [--tls] --n 1000 --ramp 5 --frames F
    python -m bench.realcount --perf --no-record --cprofile --tls --n 100,300 --ramp 10

For each N: a fresh gateway under callgrind with instrumentation off; once it accepts,
`callgrind_control -i on`, N streams over `--ramp` seconds, then `callgrind_control -d`
(the dump holds only the load window) and the gateway is stopped. Printed: instructions
in the window, per stream; with two N the difference per added stream (the idle loop's
turns over the ramp, the same in both, cancel). The dumps are kept under `--out` for
`callgrind_annotate --inclusive=yes`. `PYTHONHASHSEED=0` is set for the gateway.
`--tls`: the gateway goes to the paced nginx over https (`ssl http2`, a certificate made
for the run and trusted through SSL_CERT_FILE), as to Azure; `--upstream-http2` sets
`upstream.http2` (unset: the default, `auto`). `--perf` (with `--tls` too) runs the worker
at full speed with `perf record -e cpu-clock` attached for the load window (`--no-record`:
/proc's user and system time only); with `--cprofile` the worker runs under cProfile (its
times are wall time, so only the call counts per added stream, from two N, are worth
reading: `pstats` on `--out`/cprofile-nN.pstats).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/realcount.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import systems
from bench.callgrind import dump_total
from bench.framecpu import times
from bench.paced import PacedStream, TlsListen, have_echo_module, start_paced, tls_listen
from bench.procs import HOST, Child, Children, free_port, wait_until
from bench.streamload import LoadPlan, raise_fd_limit, run_load
from bench.streamscale import _accepting, request_bytes, stream_body


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, timeout=120)


def _gateway(children: Children, upstream_port: int, out: str, extra: list[str],
             callgrind: bool = True, cpu: str = "", tls: TlsListen | None = None,
             http2: str = "", cprofile: str = "") -> Child:
    port = free_port()
    config = systems._gateway_config(children, port, tls.port if tls else upstream_port,
                                     scheme="https" if tls else "http")
    if http2:
        config.write_text(config.read_text() + f"upstream: {{http2: {http2}}}\n")
    wrap = (["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", *extra] if callgrind else [])
    pin = ["taskset", "-c", cpu] if cpu else []
    profile = ["-m", "cProfile", "-o", cprofile] if cprofile else []
    argv = [*pin, *wrap, sys.executable, *profile, "-m", "azure_openai_proxy", "-c",
            str(config), "--workers", "1"]
    env = {**systems._python_env(), "PYTHONHASHSEED": "0"}
    if tls:
        env["SSL_CERT_FILE"] = str(tls.cert)
    child = children.start(f"gateway-{port}", argv, port, env=env)
    wait_until(child, lambda: _accepting(port), 300)
    return child


def one_count(children: Children, upstream_port: int, shape: PacedStream, streams: int,
              ramp_s: float, out: Path, extra: list[str], tls: TlsListen | None = None,
              http2: str = "") -> tuple[int, int]:
    """(instructions in the load window, streams completed)."""
    child = _gateway(children, upstream_port, str(out) + ".%p", extra, tls=tls, http2=http2)
    load = LoadPlan(HOST, child.port, request_bytes(
        "/v1/chat/completions", child.port,
        {"Authorization": f"Bearer {systems.CLIENT_KEY}"}, stream_body()),
        streams, ramp_s, shape.interval_ms / 1000, stall_s=30.0,
        limit_s=shape.content_frames * shape.interval_ms / 1000 + 60, procs=1)
    time.sleep(2.0)  # start-up's last work (the heap's settling) out of the window
    _callgrind(child.pid, "-z")
    _callgrind(child.pid, "-i", "on")
    share = run_load(load)
    _callgrind(child.pid, "-i", "off")
    _callgrind(child.pid, "-d")
    dumps = sorted(Path(out.parent).glob(f"{out.name}.{child.pid}*"))
    children.stop(child)
    dumped = [d for d in dumps if not d.name.endswith(str(child.pid))] or dumps
    return dump_total(dumped[-1]), share.completed


def _switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of `pid`'s main thread."""
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"])


def one_perf(children: Children, upstream_port: int, shape: PacedStream, streams: int,
             ramp_s: float, out: Path, cpu: str = "", record: bool = True,
             tls: TlsListen | None = None, http2: str = "", cprofile: str = "",
             ) -> tuple[float, float, int]:
    """The gateway at full speed, `perf record -e cpu-clock` attached for the load window
    only: (user s, system s, streams completed). With `cprofile`, the worker runs under
    cProfile instead, its stats written there at exit (start-up included)."""
    child = _gateway(children, upstream_port, "", [], callgrind=False, cpu=cpu, tls=tls,
                     http2=http2, cprofile=cprofile)
    load = LoadPlan(HOST, child.port, request_bytes(
        "/v1/chat/completions", child.port,
        {"Authorization": f"Bearer {systems.CLIENT_KEY}"}, stream_body()),
        streams, ramp_s, shape.interval_ms / 1000, stall_s=10.0,
        limit_s=shape.content_frames * shape.interval_ms / 1000 + 30, procs=1)
    time.sleep(1.0)
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "9999", "-g",
                             "-p", str(child.pid), "-o", str(out)] if record else ["sleep", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    u0, s0 = times(child.pid)
    w0 = _switches(child.pid)
    share = run_load(load)
    u1, s1 = times(child.pid)
    w1 = _switches(child.pid)
    print(f"  voluntary context switches (sleeps in epoll) per stream: "
          f"{(w1[0] - w0[0]) / max(share.completed, 1):.2f}, involuntary: "
          f"{(w1[1] - w0[1]) / max(share.completed, 1):.2f}", flush=True)
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)
    children.stop(child)
    return u1 - u0, s1 - s0, share.completed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100,300")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--ramp", type=float, default=40.0)
    parser.add_argument("--out", default="", help="directory for the callgrind dumps")
    parser.add_argument("--perf", action="store_true",
                        help="no callgrind: perf record (cpu-clock) of the load window instead")
    parser.add_argument("--no-record", action="store_true",
                        help="with --perf: the same run without perf attached (times only)")
    parser.add_argument("--gateway-cpu", default="", help="taskset -c CPU for the gateway")
    parser.add_argument("--valgrind-arg", action="append", default=[],
                        help="passed to valgrind, e.g. --dump-instr=yes")
    parser.add_argument("--cprofile", action="store_true",
                        help="with --perf --no-record: the worker under cProfile, its stats "
                        "in --out as cprofile-nN.pstats (call counts per added stream from two N)")
    parser.add_argument("--tls", action="store_true", help="the gateway goes over https")
    parser.add_argument("--upstream-http2", choices=("auto", "true", "false"), default="",
                        help="upstream.http2 in the gateway's config (unset: the default)")
    args = parser.parse_args(argv)
    if args.cprofile and not (args.perf and args.no_record):
        # Without --perf it was ignored (a callgrind count, no stats); with perf attached
        # it would sample cProfile's own overhead.
        parser.error("--cprofile is for --perf --no-record")
    if not have_echo_module():
        print("realcount: nginx or its echo module is missing; skipped")
        return 0
    raise_fd_limit()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="aoai-realcount-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: list[tuple[int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="aoai-realcount-") as tmp:
        children = Children(Path(tmp))
        try:
            shape = PacedStream(content_frames=args.frames)
            tls = tls_listen(children.workdir) if args.tls else None
            port, _master = start_paced(children, shape, tls=tls)
            wait_until(children.running[-1], partial(_accepting, port), 10)
            for n in (int(x) for x in args.n.split(",")):
                if args.perf:
                    user, system, done = one_perf(children, port, shape, n, args.ramp,
                                                  out_dir / f"perf-n{n}.data",
                                                  args.gateway_cpu, not args.no_record, tls,
                                                  args.upstream_http2,
                                                  str(out_dir / f"cprofile-n{n}.pstats")
                                                  if args.cprofile else "")
                    print(f"N={n}: {done} completed; user {user / max(done, 1) * 1e6:.0f} + "
                          f"sys {system / max(done, 1) * 1e6:.0f} µs per stream "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
                    continue
                total, done = one_count(children, port, shape, n, args.ramp,
                                        out_dir / f"cg-n{n}", args.valgrind_arg, tls,
                                        args.upstream_http2)
                counts.append((n, done, total))
                print(f"N={n}: {done} completed; {total:,} instructions in the window, "
                      f"{total / max(done, 1):,.0f} per stream  (load {os.getloadavg()[0]:.1f})",
                      flush=True)
        finally:
            children.close()
    if len(counts) >= 2:
        (_, d1, t1), (_, d2, t2) = counts[0], counts[-1]
        if d2 != d1:
            print(f"per added stream: {(t2 - t1) / (d2 - d1):,.0f} instructions")
    print(f"dumps in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

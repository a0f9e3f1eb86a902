"""The gateway loop's system calls, switches, wake-ups and system time per request under
wrk, governance off and on, and variants that tell governance's work from its effects (a
tool, not a test; bench/README.md, "Session 28").

    python -m bench.govsys off gov off+spin15 gov+noledger    # needs nginx, wrk and perf

Each name starts a fresh one-worker gateway as `bench.threadcpu` does (`off`, `gov`); a
variant is applied in the worker by a `sitecustomize` written to a temporary directory:
`+spinN` spins N µs of user time per request (a `perf_counter` loop: no system call where
the clock source is tsc), `+noledger` makes `LedgerWriter.add` a no-op. After a 3 s
warm-up, `perf stat --per-thread` counts, during the measured wrk run, each thread's system
calls, switches, wake-ups and IPIs sent: printed per request answered, beside each thread's
user and system µs and the whole machine's idle share (the loop's system time follows the
other vCPU's idleness, not governance's system calls).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import load, systems, threadcpu
from bench.procs import Children

EVENTS = ("raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,"
          "syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_pwrite64,"
          "sched:sched_switch,sched:sched_waking,ipi:ipi_send_cpu,irq_vectors:reschedule_entry,"
          "page-faults")

SITECUSTOMIZE = '''\
import os
_spin = float(os.environ.get("GOVSYS_SPIN_US") or 0) / 1e6
if _spin:
    import time
    from azure_openai_proxy.gateway import pipeline
    _made = pipeline.Gateway.new_record
    def _new_record(self, method, _made=_made, _clock=time.perf_counter, _spin=_spin):
        end = _clock() + _spin
        while _clock() < end:
            pass
        return _made(self, method)
    pipeline.Gateway.new_record = _new_record
if os.environ.get("GOVSYS_NOLEDGER"):
    from azure_openai_proxy.gateway import ledger
    ledger.LedgerWriter.add = lambda self, record: None
'''


def machine() -> list[int]:
    """/proc/stat's first line: user, nice, system, idle, iowait, irq, softirq, steal ticks."""
    return [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]


def measure(workdir: Path, system: systems.System, seconds: float) -> list[str]:
    assert system.child is not None
    pid = system.child.pid
    load.run_wrk(workdir, system, 32, 3)  # warm-up
    out = workdir / "perf.csv"
    before, ticks = threadcpu.threads(pid), machine()
    perf = subprocess.Popen(["perf", "stat", "--per-thread", "-x,", "-o", str(out), "-e", EVENTS,
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # perf attached before the load starts
        result = load.run_wrk(workdir, system, 32, seconds)
    finally:
        perf.send_signal(2)  # SIGINT: perf writes its counts and exits
        try:
            perf.wait(20)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
    after, spent = threadcpu.threads(pid), [b - a for a, b in zip(ticks, machine(), strict=True)]
    answered = result.requests
    lines = [f"{system.name}: {result.rps:,.0f} req/s, {answered:,} requests, machine idle "
             f"{spent[3] * 100 / max(1, sum(spent)):.0f} %"]
    for (tid, name), (user, sys_, _faults, _vol, invol) in after.items():
        user0, sys0, _, _, invol0 = before.get((tid, name), (0.0, 0.0, 0, 0, 0))
        if user - user0 + sys_ - sys0 > 0.01:
            lines.append(f"  {name}-{tid}: user {(user - user0) * 1e6 / answered:.1f} µs, system "
                         f"{(sys_ - sys0) * 1e6 / answered:.1f} µs, involuntary switches "
                         f"{(invol - invol0) / answered:.3f} per request")
    for row in csv.reader(out.read_text().splitlines()) if out.exists() else ():
        if len(row) > 3 and row[1].isdigit() and int(row[1]) / answered >= 0.001:
            lines.append(f"    {row[0]:16s} {row[3]:34s} {int(row[1]) / answered:8.3f} per request")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="off or gov, each with optional +spinN / +noledger")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        site = workdir / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{path}" if path else str(site)
        children = Children(workdir)
        try:
            upstream = systems.start_nginx_upstream(children)
            assert upstream.child is not None
            for run in args.runs:
                base, *variants = run.split("+")
                if base not in ("off", "gov"):
                    parser.error(f"{run}: off or gov first")
                spins = [variant[4:] for variant in variants if variant.startswith("spin")]
                os.environ["GOVSYS_SPIN_US"] = spins[0] if spins else ""
                os.environ["GOVSYS_NOLEDGER"] = "1" if "noledger" in variants else ""
                name = "gateway-1w-" + run.replace("+", "-")
                system = (systems.start_gateway(children, upstream.child.port, 1, name)
                          if base == "off" else
                          systems.start_gateway_governed(children, upstream.child.port, name))
                threadcpu.print_and_stop(measure(workdir, system, args.seconds), system)
        finally:
            children.close()


if __name__ == "__main__":
    main()

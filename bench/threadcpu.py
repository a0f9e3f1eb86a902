"""CPU per request of each thread of the gateway (and of its child processes) under wrk,
governance off and on: where a governed request's time goes with real sockets (a tool,
not a test).

    python -m bench.threadcpu off gov [off gov ...]     # needs nginx and wrk
    python -m bench.threadcpu off gov gov-noledger gov-journal
    python -m bench.threadcpu off gov gov-thread    # gov: the default writer (journal child)
    python -m bench.threadcpu off gov-child gov-thread --rounds 6 --seconds 3


Each name starts a fresh gateway (`off`: bench/systems.py `start_gateway`, one worker;
`gov`: `start_gateway_governed`, 100 virtual keys and the ledger), warms it for 3 s, then
reads every thread's user and system clock ticks (/proc/<pid>/task/*/stat), its minor
faults and context switches, and its child processes' CPU before and after 8 s of wrk at
32 clients. Divided by the requests answered: microseconds per request.

`gov-noledger` and `gov-journal` are `gov` with a measurement variant of the ledger
loaded into the gateway's process (bench/ledgervariants/*/sitecustomize.py, through
PYTHONPATH): `add` a no-op (the ceiling of any ledger design), and session 28's
prototype of a child process fed through a journal file (not durable: a measurement).
`gov-child` and `gov-thread` set `ledger_writer` (journal, the default since session
30, as `gov` runs; or thread).

`--rounds N` (bench/threadrounds.py) measures the named configs in alternating short
slices instead, for ratios a machine whose speed swings between 10-s windows still
decides: one gateway per config, started and warmed once and kept for all the rounds
(a fresh one per slice would add a start, a warm-up and a new database to each slice,
and the slices must be short to see the same machine); the order A B, B A, A B...
(ABBA: a drift in the machine's speed favours neither). Printed: each round's
throughputs and each config's ratio to the first named, then per config the median
and range of those ratios and its CPU a request: the event loop's thread, the whole
process, its child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import load, systems
from bench.procs import Children

_TICK = os.sysconf("SC_CLK_TCK")
_SWITCHES = re.compile(rb"(nonvoluntary|voluntary)_ctxt_switches:\s+(\d+)")


def threads(pid: int) -> dict[tuple[str, str], tuple[float, float, int, int, int]]:
    """(tid, name) -> (user s, system s, minor faults, voluntary, involuntary switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_bytes()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        switches = {kind: int(count) for kind, count in _SWITCHES.findall(status)}
        out[(tid, name)] = (int(fields[11]) / _TICK, int(fields[12]) / _TICK, int(fields[7]),
                            switches.get(b"voluntary", 0), switches.get(b"nonvoluntary", 0))
    return out


def children_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s child processes (the ledger's writer process, if any)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def measure(workdir: Path, system: systems.System, seconds: float) -> list[str]:
    assert system.child is not None
    pid = system.child.pid
    load.run_wrk(workdir, system, 32, 3)  # warm-up
    before, kids_before = threads(pid), children_cpu(pid)
    result = load.run_wrk(workdir, system, 32, seconds)
    after, kids_after = threads(pid), children_cpu(pid)
    answered = result.requests
    per = 1e6 / answered
    lines = [f"{system.name}: {result.rps:,.0f} req/s, {answered:,} requests, children "
             f"{(kids_after - kids_before) * per:.1f} µs/request"]
    for key, (user, sys_, faults, vol, invol) in after.items():
        user0, sys0, faults0, vol0, invol0 = before.get(key, (0.0, 0.0, 0, 0, 0))
        if user - user0 + sys_ - sys0 > 0.01:
            lines.append(f"  {key[1]:16s} user {(user - user0) * per:5.1f} µs  system "
                         f"{(sys_ - sys0) * per:5.1f} µs  minor faults {(faults - faults0) / answered:.3f}"
                         f"  switches {(vol - vol0) / answered:.3f} / {(invol - invol0) / answered:.3f}"
                         " per request")
    return lines


# gov-child: the gateway's own journal-fed child writer (`ledger_writer: journal`, set
# through its environment variable), not a variant loaded beside it.
_VARIANTS = {"gov-noledger": "noledger", "gov-journal": "journal", "gov-child": "journal",
             "gov-thread": "thread"}
_WRITERS = ("journal", "thread")  # `ledger_writer`'s, set by its environment variable


def governed(children: Children, upstream_port: int, run: str) -> systems.System:
    """The governed gateway, with `run`'s ledger variant on its PYTHONPATH (if any)."""
    variant = _VARIANTS.get(run)
    if variant is None:
        return systems.start_gateway_governed(children, upstream_port)
    name, value = (("AZURE_OPENAI_PROXY_LEDGER_WRITER", variant) if variant in _WRITERS
                   else ("PYTHONPATH", str(Path(__file__).parent / "ledgervariants" / variant)))
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        return systems.start_gateway_governed(children, upstream_port, f"gateway-1w-{run}")
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", choices=("off", "gov", *_VARIANTS))
    parser.add_argument("--seconds", type=float, default=None,
                        help="of wrk a measurement (8; a slice of --rounds: 3)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="alternating slices of the configs (bench/threadrounds.py)")
    args = parser.parse_args()
    if args.rounds:
        from bench.threadrounds import run_rounds
        run_rounds(args.runs, args.rounds, args.seconds or 3.0, start)
        return
    args.seconds = args.seconds or 8.0
    with upstream_ready() as (workdir, children, port):
        for run in args.runs:
            system = start(children, port, run)
            print_and_stop(measure(workdir, system, args.seconds), system)


@contextlib.contextmanager
def upstream_ready() -> Iterator[tuple[Path, Children, int]]:
    """A temporary directory, the children started in it (stopped after), and nginx
    answering as Azure among them: its port."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        children = Children(workdir)
        try:
            upstream = systems.start_nginx_upstream(children)
            assert upstream.child is not None
            yield workdir, children, upstream.child.port
        finally:
            children.close()


def start(children: Children, upstream_port: int, run: str) -> systems.System:
    """A gateway of config `run`."""
    if run == "off":
        return systems.start_gateway(children, upstream_port, 1, "gateway-1w")
    return governed(children, upstream_port, run)


def print_and_stop(lines: list[str], system: systems.System) -> None:
    """Print one gateway's measured lines, then stop it: one run of a series."""
    print("\n".join(lines), flush=True)
    assert system.child is not None
    system.child.process.terminate()
    system.child.process.wait()


if __name__ == "__main__":
    main()

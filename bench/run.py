"""The gateway's benchmark, side by side with direct calls, nginx and LiteLLM, in one run.

    python bench/run.py [--duration 10] [--smoke] [--only gateway-1w,nginx]
                        [--litellm-venv /opt/litellm] [--results-dir bench/results]
                        [--streamscale 1000,5000,10000] [--gov-rounds 5]

Prints one table, checks issue 6's budget (and issue 13's governance budget: the same
gateway with governance on against it off, when both ran), writes `latest.json` and `latency.png` to the
results directory. See bench/README.md for set-up and the numbers of a real run.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, streamscale, systems
from bench.load import have_wrk, run_load
from bench.paced import PacedStream
from bench.procs import Children, descendants, rss_mb
from bench.streams import many_streams, measure_ttft
from bench.systems import SLOW_DEPLOYMENT, System

SYSTEMS = ("direct", "nginx", "gateway-1w", "gateway-1w-gov", "gateway-Nw", "gateway-1w-granian",
           "LiteLLM")
GOV, GOV_BASE = "gateway-1w-gov", "gateway-1w"
# The startup probe: one chat call answered before the load starts.
_PROBES = 1


@dataclass(frozen=True)
class Plan:
    duration: float
    warmup: float
    ttft_streams: int
    many: int
    many_token_ms: float
    many_tokens: int
    many_ramp_s: float
    workers: int
    only: frozenset[str]
    litellm: Path | None
    # Streams at scale (issue 15): these N, after the other phases (bench/streamscale.py).
    streamscale: tuple[int, ...] = ()
    # Issue 13's pair (gateway-1w, gateway-1w-gov) measured this many times, interleaved.
    gov_rounds: int = 1

    def wants(self, name: str) -> bool:
        return name == "direct" or not self.only or name in self.only


def _plan(args: argparse.Namespace) -> Plan:
    venv = args.litellm_venv or os.environ.get("LITELLM_VENV")
    binary = systems.litellm_binary(venv)
    if venv and binary is None:
        print(f"LiteLLM: no bin/litellm in {venv}; skipped")
    only = frozenset(s.strip() for s in args.only.split(",") if s.strip()) if args.only else frozenset()
    unknown = only - {*SYSTEMS, "streams"}
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}, streams")
    workers = os.cpu_count() or 1
    scale = args.streamscale or ()
    rounds = max(1, args.gov_rounds)
    if args.smoke:
        return Plan(min(args.duration, 1.0), 0.5, 5, 100, 50, 8, 0.3, workers, only, binary, scale,
                    rounds)
    return Plan(args.duration, 2.0, 150, 2000, 300, 20, 2.0, workers, only, binary, scale, rounds)


def _log(message: str) -> None:
    print(message, flush=True)


def _load_rows(plan: Plan, workdir: Path, system: System) -> dict[str, Any]:
    warmup = run_load(workdir, system, 32, plan.warmup)
    # Every request answered and every error, warm-up included (the ledger's check).
    row: dict[str, Any] = {"load_requests": warmup.requests, "load_errors": warmup.errors}
    for conc in (1, 32):
        result = run_load(workdir, system, conc, plan.duration)
        row[f"c{conc}"] = result.as_dict()
        row["load_requests"] += result.requests
        row["load_errors"] += result.errors
        _log(f"  {system.name} @{conc}: {result.rps:,.0f} req/s, p50 {result.p50_us:.0f} µs, "
             f"p99 {result.p99_us:.0f} µs, errors {result.errors}")
    return row


def _memory(system: System) -> dict[str, float]:
    assert system.pid is not None
    time.sleep(0.5)
    return {"idle_rss_mb": sum(rss_mb(p) for p in descendants(system.pid))}


def _phase_requests(plan: Plan, children: Children, results: dict[str, Any]) -> None:
    _log("== non-streamed chat")
    upstream = (systems.start_nginx_upstream(children) if systems.have_nginx()
                else systems.start_emulator(children))
    results["config"]["upstream"] = "nginx" if systems.have_nginx() else "emulator"
    assert upstream.child is not None
    port = upstream.child.port
    starters: list[tuple[str, Callable[[], System]]] = [
        ("nginx", lambda: systems.start_nginx_proxy(children, port)),
        ("gateway-1w", lambda: systems.start_gateway(children, port, 1, "gateway-1w")),
        # gateway-1w with governance on: 100 virtual keys, RPM/TPM limits, the ledger.
        (GOV, lambda: systems.start_gateway_governed(children, port)),
        ("gateway-Nw", lambda: systems.start_gateway(children, port, plan.workers, "gateway-Nw")),
        # The same gateway and settings on granian (RSGI) instead of FastServer, one worker.
        ("gateway-1w-granian", lambda: systems.start_gateway_granian(children, port)),
    ]
    if plan.litellm is not None:
        binary = plan.litellm
        starters.append(("LiteLLM", lambda: systems.start_litellm(children, binary, port)))
    results["systems"]["direct"] = _load_rows(plan, children.workdir, upstream)
    for name, start in starters:
        if not plan.wants(name) or (name == "nginx" and not systems.have_nginx()):
            continue
        if name == "gateway-1w-granian" and not systems.have_granian():
            _log("gateway-1w-granian: granian is not installed (pip install -e '.[bench]'); skipped")
            continue
        system = start()
        row: dict[str, Any] = {**system.extra, **_memory(system)}
        row.update(_load_rows(plan, children.workdir, system))
        results["systems"][name] = row
        assert system.child is not None
        children.stop(system.child)
        if system.database is not None:
            row["ledger"] = _ledger(system, row["load_requests"] + _PROBES)
    if plan.gov_rounds > 1 and plan.wants(GOV_BASE) and plan.wants(GOV):
        _gov_rounds(plan, children, port, results)


def _gov_rounds(plan: Plan, children: Children, port: int, results: dict[str, Any]) -> None:
    """More rounds of issue 13's pair, off then on each round: this machine's speed drifts
    by 10-25% from one minute to the next, so one pair a few seconds apart can show a gap
    that is only drift. Each round is a fresh start of both systems, loaded as above."""
    rounds = [_pair_round(results["systems"][GOV_BASE], results["systems"][GOV])]
    for number in range(2, plan.gov_rounds + 1):
        _log(f"== issue 13's pair, round {number} of {plan.gov_rounds}")
        rows: list[dict[str, Any]] = []
        starts: tuple[Callable[[], System], ...] = (
            lambda: systems.start_gateway(children, port, 1, GOV_BASE),
            lambda: systems.start_gateway_governed(children, port))
        for start in starts:
            system = start()
            row = _load_rows(plan, children.workdir, system)
            assert system.child is not None
            children.stop(system.child)
            if system.database is not None:
                row["ledger"] = _ledger(system, row["load_requests"] + _PROBES)
            rows.append(row)
        rounds.append(_pair_round(*rows))
    results["governance_rounds"] = rounds


def _pair_round(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    ledger = on.get("ledger") or {}
    return {"off_rps": off["c32"]["rps"], "on_rps": on["c32"]["rps"],
            "ratio": on["c32"]["rps"] / off["c32"]["rps"],
            "added_p50_us": on["c1"]["p50_us"] - off["c1"]["p50_us"],
            "errors": on["load_errors"],
            "missing": (max(0, ledger["answered"] - ledger["by_status"].get("200", 0))
                        if ledger else None)}


def _phase_streams(plan: Plan, children: Children, results: dict[str, Any]) -> None:
    _log("== streams (emulator upstream: 20 ms to first token, 5 ms per token)")
    emulator = systems.start_emulator(children, ttft_ms=20, token_ms=5,
                                      slow_token_ms=plan.many_token_ms)
    assert emulator.child is not None
    port = emulator.child.port
    starters: list[tuple[str, Callable[[], System]]] = [("direct", lambda: emulator)]
    if systems.have_nginx():
        starters.append(("nginx", lambda: systems.start_nginx_proxy(children, port)))
    starters.append(("gateway-1w", lambda: systems.start_gateway(children, port, 1, "gateway-1w")))
    starters.append((GOV, lambda: systems.start_gateway_governed(children, port)))
    if systems.have_granian():
        starters.append(("gateway-1w-granian", lambda: systems.start_gateway_granian(children, port)))
    if plan.litellm is not None:
        binary = plan.litellm
        starters.append(("LiteLLM", lambda: systems.start_litellm(children, binary, port)))
    for name, start in starters:
        if not plan.wants(name):
            continue
        system = start()
        stats = measure_ttft(system, plan.ttft_streams, "gpt-4o", 16)
        results["systems"].setdefault(name, {})["stream"] = stats.as_dict()
        _log(f"  {name}: TTFT p50 {stats.ttft_p50_ms:.2f} ms, per chunk {stats.chunk_mean_ms:.3f} ms,"
             f" {stats.streams} streams, {stats.failures} failed")
        if name == "gateway-1w":
            _phase_many(plan, system, results)
        if name != "direct" and system.child is not None:
            children.stop(system.child)
        if system.database is not None:
            answered = plan.ttft_streams + 2 - stats.failures + _PROBES  # 2 warm-up streams
            results["systems"][name]["stream"]["ledger"] = _ledger(system, answered)


def _phase_many(plan: Plan, gateway: System, results: dict[str, Any]) -> None:
    assert gateway.pid is not None
    many = many_streams(gateway, gateway.pid, plan.many, SLOW_DEPLOYMENT, plan.many_tokens,
                        plan.many_ramp_s)
    results["streams_many"] = many.as_dict()
    _log(f"  {plan.many} concurrent streams on 1 worker: {many.completed} completed, "
         f"{many.stalled} stalled, peak open {many.peak_open}, VmHWM {many.vm_hwm_mb:.1f} MB")


def _phase_streamscale(plan: Plan, results: dict[str, Any]) -> None:
    """N concurrent long streams: gateway-1w, the Go seed and direct (bench/streamscale.py)."""
    _log(f"== streams at scale: N = {', '.join(f'{n:,}' for n in plan.streamscale)}")
    scale = streamscale.ScalePlan(plan.streamscale, PacedStream(), 5.0, 1,
                                  streamscale.SYSTEMS, streamscale.SEED_GZ)
    rows = streamscale.run_matrix(scale, _log)
    results["streamscale"] = [asdict(row) for row in rows]
    if rows:
        _log("\n" + streamscale.table(rows))


def _ledger(system: System, answered: int) -> dict[str, Any]:
    """The ledger's records once the gateway stopped, against the requests answered:
    every answer is recorded. A few more records are expected: the requests in flight
    when the load tool stopped were served (or recorded as abandoned, 499) but not
    counted by it."""
    assert system.database is not None
    statuses, spooled = systems.ledger_records(system.database)
    records = sum(statuses.values())
    by_status = ", ".join(f"{status}: {count:,}" for status, count in statuses.items())
    _log(f"  {system.name} ledger: {records:,} records ({by_status}), {spooled} spooled, "
         f"for {answered:,} requests answered")
    return {"records": records, "by_status": statuses, "spooled": spooled, "answered": answered}


def _num_at(results: dict[str, Any], name: str, *path: str) -> float | None:
    node: Any = results["systems"].get(name)
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def governance_budget(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's budget: gateway-1w-gov against gateway-1w of the same run; empty unless
    both ran."""
    def at(name: str, *path: str) -> float | None:
        return _num_at(results, name, *path)

    rps, base_rps = at(GOV, "c32", "rps"), at(GOV_BASE, "c32", "rps")
    p50, base_p50 = at(GOV, "c1", "p50_us"), at(GOV_BASE, "c1", "p50_us")
    if rps is None or base_rps is None or p50 is None or base_p50 is None:
        return []
    # Every request wrk saw answered was a 200 (errors 0): each needs a 200 record.
    rounds = results.get("governance_rounds") or [
        _pair_round(results["systems"][GOV_BASE], results["systems"][GOV])]
    missing = [r["missing"] for r in rounds]
    # Several rounds: the median round's ratio and added time; errors and records summed.
    lines: list[tuple[str, float | None, str, float]] = [
        ("governance on vs off req/s @32", statistics.median(r["ratio"] for r in rounds), ">=", 0.90),
        ("governance added p50 @1 (µs)", statistics.median(r["added_p50_us"] for r in rounds),
         "<=", 25.0),
        ("governance on: errors and non-2xx", float(sum(r["errors"] for r in rounds)), "<=", 0.0),
        ("governance on: 200s answered without a ledger record",
         None if None in missing else float(sum(m for m in missing if m is not None)), "<=", 0.0),
    ]
    return [{"line": label, "value": value, "op": op, "limit": limit,
             "met": None if value is None else value >= limit if op == ">=" else value <= limit}
            for label, value, op, limit in lines]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def run(plan: Plan, results_dir: Path) -> dict[str, Any]:
    _raise_fd_limit()
    results: dict[str, Any] = {
        "machine": report.machine(),
        "config": {"duration_s": plan.duration, "load_tool": "wrk" if have_wrk() else "asyncio",
                   "gateway_workers_N": plan.workers, "streams_many": plan.many},
        "systems": {},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_before": report.loadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="aoai-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            _phase_requests(plan, children, results)
            children.close()
            if not plan.only or "streams" in plan.only or plan.only & {"gateway-1w", GOV,
                                                                        "gateway-1w-granian"}:
                _phase_streams(plan, children, results)
        finally:
            children.close()
    if plan.streamscale:
        _phase_streamscale(plan, results)
    results["loadavg_after"] = report.loadavg()
    report.derive(results)
    results["budget"] = report.budget(results)
    results["budget_governance"] = governance_budget(results)
    report.write_json(results, results_dir / "latest.json")
    _log("\n" + report.text_table(results))
    _log("\nbudget (issue 6):\n" + report.budget_text(results["budget"]))
    for number, pair in enumerate(results.get("governance_rounds", []), 1):
        _log(f"issue 13 round {number}: off {pair['off_rps']:,.0f} req/s, on {pair['on_rps']:,.0f}"
             f" req/s, ratio {pair['ratio']:.3f}, added p50 @1 {pair['added_p50_us']:.0f} µs")
    if results["budget_governance"]:
        _log("\ngovernance budget (issue 13, gateway-1w-gov vs gateway-1w, same run):\n"
             + report.budget_text(results["budget_governance"]))
    _log(report.write_chart(results, results_dir / "latency.png"))
    _log(f"raw numbers: {results_dir / 'latest.json'}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    parser.add_argument("--smoke", action="store_true", help="seconds per system, few streams")
    parser.add_argument("--only", help=f"comma-separated: {', '.join(SYSTEMS)}, streams")
    parser.add_argument("--litellm-venv", help="virtualenv with litellm[proxy] (or $LITELLM_VENV)")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--streamscale", type=streamscale.counts, metavar="N,N",
                        help="also N concurrent streams (issue 15), e.g. 1000,5000,10000")
    parser.add_argument("--gov-rounds", type=int, default=1, metavar="N",
                        help="issue 13's pair (gateway-1w, gateway-1w-gov) N times, interleaved;"
                             " the budget takes the median round")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` kills the children
    run(_plan(args), args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

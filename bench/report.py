"""Turning raw numbers into the table, the budget check, the JSON file and the chart."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ORDER = ("direct", "nginx", "gateway-1w", "gateway-1w-gov", "gateway-Nw", "gateway-1w-granian",
         "LiteLLM")
GATEWAYS = ("gateway-1w", "gateway-1w-gov", "gateway-Nw", "gateway-1w-granian")
Results = dict[str, Any]


def machine() -> dict[str, Any]:
    import aiohttp

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "platform": platform.platform()}


def loadavg() -> str:
    """Other work on the machine skews every number: the run records the load it saw."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _get(results: Results, system: str, *path: str) -> float | None:
    node: Any = results["systems"].get(system)
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def derive(results: Results) -> None:
    """Added latency over direct and the gateway-to-peer ratios, from the same run."""
    systems = results["systems"]
    for name, row in systems.items():
        for conc in ("c1", "c32"):
            base = _get(results, "direct", conc, "p50_us")
            mine = _get(results, name, conc, "p50_us")
            base99 = _get(results, "direct", conc, "p99_us")
            mine99 = _get(results, name, conc, "p99_us")
            if conc in row and None not in (base, mine, base99, mine99):
                row[conc]["added_p50_us"] = mine - base  # type: ignore[operator]
                row[conc]["added_p99_us"] = mine99 - base99  # type: ignore[operator]
        if "stream" in row and "stream" in systems.get("direct", {}):
            direct = systems["direct"]["stream"]
            row["stream"]["added_ttft_p50_ms"] = row["stream"]["ttft_p50_ms"] - direct["ttft_p50_ms"]
            row["stream"]["added_chunk_ms"] = row["stream"]["chunk_mean_ms"] - direct["chunk_mean_ms"]
    for name in GATEWAYS:
        if name not in systems:
            continue
        ratios: dict[str, float] = {}
        for peer in ("nginx", "LiteLLM"):
            rps, peer_rps = _get(results, name, "c32", "rps"), _get(results, peer, "c32", "rps")
            if rps and peer_rps:
                ratios[f"rps_c32_vs_{peer}"] = rps / peer_rps
            for conc in ("c1", "c32"):
                mine, theirs = _get(results, name, conc, "p50_us"), _get(results, peer, conc, "p50_us")
                if mine and theirs:
                    ratios[f"p50_{conc}_vs_{peer}"] = mine / theirs
        systems[name]["ratios"] = ratios


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} µs"


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


COLUMNS = ("system", "req/s @32", "p50 @32", "p99 @32", "p50 @1", "p99 @1", "added p50 @1",
           "added p99 @1", "req/s vs nginx", "req/s vs LiteLLM", "added TTFT p50", "added per chunk",
           "cold start", "idle RSS")


def rows(results: Results) -> list[list[str]]:
    table = []
    for name in ORDER:
        if name not in results["systems"]:
            continue
        def g(*path: str, name: str = name) -> float | None:
            return _get(results, name, *path)

        table.append([
            name, _num(g("c32", "rps"), ",.0f"), _us(g("c32", "p50_us")), _us(g("c32", "p99_us")),
            _us(g("c1", "p50_us")), _us(g("c1", "p99_us")),
            _us(g("c1", "added_p50_us")) if name != "direct" else "",
            _us(g("c1", "added_p99_us")) if name != "direct" else "",
            _num(g("ratios", "rps_c32_vs_nginx"), ".2f", "x"),
            _num(g("ratios", "rps_c32_vs_LiteLLM"), ".1f", "x"),
            _num(g("stream", "added_ttft_p50_ms"), ".2f", " ms") if name != "direct" else "",
            _num(g("stream", "added_chunk_ms"), ".3f", " ms") if name != "direct" else "",
            _num(g("cold_start_s"), ".2f", " s"), _num(g("idle_rss_mb"), ".1f", " MB"),
        ])
    return table


def markdown_table(results: Results) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join(lines)


def text_table(results: Results) -> str:
    table = [list(COLUMNS), *rows(results)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
           for r in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def budget(results: Results) -> list[dict[str, Any]]:
    """Issue 6's budget, line by line: the value measured, the limit, met or not."""
    g = lambda *p: _get(results, *p)  # noqa: E731
    many = results.get("streams_many") or {}
    stalled = many.get("stalled")
    lines = [
        ("1 worker req/s @32 vs nginx", g("gateway-1w", "ratios", "rps_c32_vs_nginx"), ">=", 0.20),
        ("1 worker req/s @32 vs LiteLLM", g("gateway-1w", "ratios", "rps_c32_vs_LiteLLM"), ">=", 40.0),
        ("added p50 @1 client (µs)", g("gateway-1w", "c1", "added_p50_us"), "<=", 200.0),
        ("added p99 @1 client (µs)", g("gateway-1w", "c1", "added_p99_us"), "<=", 1000.0),
        ("streaming added TTFT p50 (ms)", g("gateway-1w", "stream", "added_ttft_p50_ms"), "<=", 1.0),
        (f"{many.get('streams', 0)} streams, 1 worker: peak RSS (MB)", many.get("vm_hwm_mb"), "<", 150.0),
        (f"{many.get('streams', 0)} streams: stalled", None if stalled is None else float(stalled),
         "<=", 0.0),
        ("cold start to first request (s)", g("gateway-1w", "cold_start_s"), "<", 1.0),
        ("idle RSS (MB)", g("gateway-1w", "idle_rss_mb"), "<", 60.0),
    ]
    checks = []
    for label, value, op, limit in lines:
        met = None if value is None else (value >= limit if op == ">=" else
                                          value <= limit if op == "<=" else value < limit)
        checks.append({"line": label, "value": value, "op": op, "limit": limit, "met": met})
    return checks


def budget_text(checks: list[dict[str, Any]]) -> str:
    out = []
    for c in checks:
        mark = {True: "MEETS ", False: "MISSES", None: "n/a   "}[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']:.3g}"
        out.append(f"  {mark} {c['line']}: {value} (budget {c['op']} {c['limit']:g})")
    return "\n".join(out)


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def write_chart(results: Results, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    names = [n for n in ORDER if n in results["systems"]]
    marks = (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, conc, title in ((axes[0], "c1", "1 client"), (axes[1], "c32", "32 clients")):
        width = 0.8 / len(marks)
        for i, (key, label) in enumerate(marks):
            values = [(_get(results, n, conc, key) or 0) / 1000 for n in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title(f"non-streamed chat, {title}")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"

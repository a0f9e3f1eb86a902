"""bench/threadrounds.py's order and summary (threadcpu.py --rounds), on plain slices;
its run against real gateways: tests/e2e/test_threadrounds_smoke.py."""

from __future__ import annotations

from bench.threadrounds import Slice, order, summary


def test_rounds_alternate_abba() -> None:
    assert order(["off", "gov-child"], 4) == [
        ["off", "gov-child"], ["gov-child", "off"], ["off", "gov-child"], ["gov-child", "off"]]
    assert order(["a", "b", "c"], 2) == [["a", "b", "c"], ["c", "b", "a"]]


def test_the_summary_gives_each_rounds_ratio_median_and_range_and_cpu() -> None:
    rounds = [
        {"off": Slice(1000, 1000.0, 0.10, 0.11, 0.0), "gov": Slice(800, 800.0, 0.09, 0.10, 0.01)},
        {"gov": Slice(900, 900.0, 0.09, 0.10, 0.01), "off": Slice(1000, 1000.0, 0.10, 0.11, 0.0)},
        {"off": Slice(1000, 1000.0, 0.10, 0.11, 0.0), "gov": Slice(950, 950.0, 0.10, 0.11, 0.01)},
    ]
    lines = summary(["off", "gov"], rounds)
    assert lines[0] == "gov/off: median 0.900, range 0.800-0.950 (3 pairs)"
    assert lines[1] == "off: 3,000 requests; µs a request: loop 100.0, process 110.0, children 0.0"
    # (0.28 s of the loop, 0.31 of the process, 0.03 of its child over 2,650 requests)
    assert lines[2] == ("gov: 2,650 requests; µs a request: loop 105.7, process 117.0, "
                        "children 11.3")

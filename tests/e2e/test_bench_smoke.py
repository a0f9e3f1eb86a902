"""The benchmark command still works: `python bench/run.py --smoke` prints the table and
writes a JSON with every system's numbers. A test of the script, never of the timings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_smoke_run_prints_the_table_and_writes_every_row(tmp_path: Path) -> None:
    env = dict(os.environ)
    if not env.get("LITELLM_VENV"):
        env.pop("LITELLM_VENV", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--results-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = ["direct", "gateway-1w", "gateway-1w-gov", "gateway-Nw"]
    if shutil.which("nginx"):
        expected.append("nginx")
    if env.get("LITELLM_VENV"):
        expected.append("LiteLLM")
    for name in expected:
        assert f"\n{name} " in done.stdout, done.stdout
    assert "budget (issue 6)" in done.stdout

    results = json.loads((tmp_path / "latest.json").read_text())
    for name in expected:
        row = results["systems"][name]
        for conc in ("c1", "c32"):
            assert row[conc]["requests"] > 0 and row[conc]["rps"] > 0, (name, row)
            assert row[conc]["p50_us"] > 0 and row[conc]["p99_us"] > 0, (name, row)
            assert row[conc]["errors"] == 0, (name, row)
    for name in ("direct", "gateway-1w"):
        stream = results["systems"][name]["stream"]
        assert stream["streams"] > 0 and stream["ttft_p50_ms"] > 0, stream
    gateway = results["systems"]["gateway-1w"]
    assert gateway["cold_start_s"] > 0 and gateway["idle_rss_mb"] > 0
    many = results["streams_many"]
    assert many["completed"] > 0 and many["vm_hwm_mb"] > 0
    assert {line["line"] for line in results["budget"]}

    # Governance on: nothing refused (no 401/429), every 200 answered is in the ledger.
    governed = results["systems"]["gateway-1w-gov"]
    assert governed["load_errors"] == 0, governed
    for ledger in (governed["ledger"], governed["stream"]["ledger"]):
        assert ledger["by_status"].get("200", 0) >= ledger["answered"] > 0, ledger
        assert set(ledger["by_status"]) <= {"200", "499"}, ledger
    assert "governance budget (issue 13" in done.stdout
    assert {line["line"] for line in results["budget_governance"]}


@pytest.mark.parametrize("flags", [[], ["--bare"]])
def test_the_in_process_tool_serves_every_request(flags: list[str]) -> None:
    """`python -m bench.inprocess` runs the request path on fake sockets to the end (it
    waits for every answer, so a broken path hangs and fails here): a test of the tool."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--requests", "300", "--clients", "4", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " µs CPU per request (300 requests, 4 clients)" in done.stdout


@pytest.mark.parametrize("per_read", ["1", "4"])
def test_the_in_process_stream_mode_relays_every_stream(per_read: str) -> None:
    """`python -m bench.inprocess --stream` relays every stream to its [DONE] (it waits for
    each, so a broken path hangs and fails here): a test of the tool, never a timing."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--stream", "--streams", "20", "--rounds",
         "2", "--frames", "12", "--per-read", per_read],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"µs CPU per relayed frame (20 streams x 2 rounds x 18 frames, {per_read} per read" \
        in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_governance_rounds_interleave_the_pair_and_take_the_median(tmp_path: Path) -> None:
    """`--gov-rounds 2` measures issue 13's pair twice, off then on each round, and the
    budget's ratio is the median of the rounds' ratios (a test of the script, not timings)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--only", "gateway-1w,gateway-1w-gov",
         "--gov-rounds", "2", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    rounds = results["governance_rounds"]
    assert len(rounds) == 2 and all(r["off_rps"] > 0 and r["on_rps"] > 0 for r in rounds), rounds
    assert all(r["errors"] == 0 and r["missing"] == 0 for r in rounds), rounds
    budget = {line["line"]: line["value"] for line in results["budget_governance"]}
    expected = (rounds[0]["ratio"] + rounds[1]["ratio"]) / 2  # the median of two
    assert budget["governance on vs off req/s @32"] == pytest.approx(expected)
    assert "issue 13 round 2: off " in done.stdout

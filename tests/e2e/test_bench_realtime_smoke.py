"""`python -m bench.realtime` still works, on a few sessions for a second: every event
comes back both ways and the numbers exist. A test of the script, never of the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_a_small_realtime_run_reports_every_number() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.realtime", "--sessions", "4", "--rate", "5",
         "--duration", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    for phase in ("direct", "gateway"):
        assert result[phase]["sent"] == result[phase]["echoed"] == 20, result
        assert result[phase]["failed_sessions"] == 0 and result[phase]["p50_ms"] > 0
    assert all(value > 0 for value in result["gateway_rss_mb"].values())
    assert result["gateway_cpu_us_per_event"] > 0

"""`python -m bench.threadcpu A B --rounds 2 --seconds 1` runs (a test of the script, never
of the timings): both gateways serve every slice, and it prints each round's ratio,
their median and range, and each config's CPU a request."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("wrk")), reason="nginx, wrk")
def test_rounds_alternate_the_configs_and_summarise_the_ratios() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.threadcpu", "off", "gov-child", "--rounds", "2",
         "--seconds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=140, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("round 1: off ") and ", gov-child " in lines[0]
    assert lines[1].startswith("round 2: gov-child ") and ", off " in lines[1]
    assert lines[2].startswith("gov-child/off: median ") and "(2 pairs)" in lines[2]
    assert lines[3].startswith("off: ") and "children 0.0" in lines[3]
    child_cpu = float(lines[4].rsplit("children ", 1)[1])
    assert child_cpu > 0  # the journal's child wrote the ledger

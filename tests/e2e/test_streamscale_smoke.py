"""`python -m bench.streamscale` still works: a tiny run prints its table and writes a
row for each system with every stream completed. A test of the script, never of the
timings (skipped where nginx or its echo module is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.paced import have_echo_module
from bench.streamscale import SEED_GZ

REPO = Path(__file__).resolve().parents[2]

# Half a minute of benchmark runs: in .ci/run's slow step (`pytest --slow`), not the default run.
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not have_echo_module(), reason="apt-get install -y nginx libnginx-mod-http-echo")
@pytest.mark.timeout(180)
def test_a_small_run_prints_the_table_and_every_stream_completes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.streamscale", "--n", "20", "--frames", "3",
         "--interval-ms", "5", "--ramp", "0.2", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| system | N | interval / ramp | peak open | completed |" in done.stdout
    rows = json.loads((tmp_path / "streamscale.json").read_text())["rows"]
    expected = ["direct", "gateway-1w"] + (["seed"] if SEED_GZ.is_file() else [])
    assert [row["system"] for row in rows] == expected
    for row in rows:
        assert (row["completed"], row["stalled"], row["errors"]) == (20, 0, 0), row
        assert row["content_frames"] == 60
    if not SEED_GZ.is_file():
        assert "the Go seed is skipped" in done.stdout


@pytest.mark.skipif(not have_echo_module(), reason="apt-get install -y nginx libnginx-mod-http-echo")
@pytest.mark.timeout(180)
def test_with_http2_the_gateway_row_runs_over_h2c(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.streamscale", "--n", "20", "--frames", "3",
         "--interval-ms", "5", "--ramp", "0.2", "--http2", "--only", "gateway-1w",
         "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "streamscale.json").read_text())["rows"]
    assert [row["system"] for row in rows] == ["gateway-1w-h2"]
    assert (rows[0]["completed"], rows[0]["stalled"], rows[0]["errors"]) == (20, 0, 0)


@pytest.mark.skipif(not have_echo_module(), reason="apt-get install -y nginx libnginx-mod-http-echo")
@pytest.mark.timeout(180)
def test_with_tls_the_gateway_row_runs_its_default_settings_over_https(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.streamscale", "--n", "20", "--frames", "3",
         "--interval-ms", "5", "--ramp", "0.2", "--tls", "--only", "gateway-1w",
         "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "streamscale.json").read_text())["rows"]
    assert [row["system"] for row in rows] == ["gateway-1w (https, h2 by ALPN)"]
    assert (rows[0]["completed"], rows[0]["stalled"], rows[0]["errors"]) == (20, 0, 0)

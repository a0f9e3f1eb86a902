"""`healthcheck --timeout` past what a socket takes (1e10 s and up: past time_t in
nanoseconds) was still an OverflowError's traceback from the probe, exit 1 as if the
server were down, after the check for a finite number above 0 (bde7659). A probe's
timeout is at most a day; past it, argparse's one-line error, exit 2."""

from __future__ import annotations

import pytest

from azure_openai_proxy.cli import main


@pytest.mark.parametrize("timeout", ["1e10", "1e300", "86401"])
def test_a_timeout_past_a_day_is_a_usage_error(
        timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # main: an OverflowError's traceback for 1e10
        main(["healthcheck", "--timeout", timeout, "--listen", "127.0.0.1:1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--timeout" in err and "at most 86400" in err, err


def test_a_day_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["healthcheck", "--timeout", "86400", "--listen", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: http://127.0.0.1:1/health failed")

"""`healthcheck --timeout` that no socket takes (-1, 0, nan, inf): argparse's one-line
usage error, exit 2; it was a ValueError's or OverflowError's traceback from the probe
(http.client's socket timeout), exit 1 as if the server were unhealthy."""

from __future__ import annotations

import pytest

from azure_openai_proxy.cli import main


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon"])
def test_a_timeout_no_socket_takes_is_a_usage_error(
        timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["healthcheck", "--timeout", timeout, "--listen", "127.0.0.1:1"])
    assert exited.value.code == 2  # main: a traceback (or exit 2 for "soon" alone)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--timeout" in err and "a number of seconds" in err, err


def test_a_fractional_timeout_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["healthcheck", "--timeout", "0.5", "--listen", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: http://127.0.0.1:1/health failed")

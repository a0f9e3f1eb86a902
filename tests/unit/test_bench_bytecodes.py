"""`python -m bench.inprocess --bytecodes N`: counts the request path's bytecodes, for
short requests and for streams (a test of the tool, never of a count)."""

from __future__ import annotations

import sys

import pytest

from bench import inprocess


@pytest.mark.parametrize("args", [
    ["--requests", "20", "--clients", "2"],
    ["--stream", "--streams", "2", "--rounds", "1", "--frames", "0"],
])
def test_bytecodes_are_counted_per_request_and_per_stream(
        args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    instrument = inprocess.instrument
    try:
        inprocess.main(["--bytecodes", "3", *args])
    finally:
        inprocess.instrument = instrument
        sys.settrace(None)
    out = capsys.readouterr().out
    per = "stream" if "--stream" in args else "request"
    line = next(line for line in out.splitlines() if f"bytecodes per {per}" in line)
    assert int(line.split()[0].replace(",", "")) > 1000
    assert "gateway/" in out or "http/" in out or "normalize/" in out

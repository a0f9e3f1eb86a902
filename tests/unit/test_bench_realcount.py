"""bench.realcount's arguments: `--cprofile` is refused where it would do nothing (without
`--perf`, a callgrind count ran and no stats were written) or mislead (perf attached to
a worker running under cProfile), before any process starts."""

from __future__ import annotations

import pytest

from bench import realcount


@pytest.mark.parametrize("argv", [["--cprofile"], ["--cprofile", "--perf"],
                                  ["--cprofile", "--no-record"]])
def test_cprofile_without_perf_no_record_is_an_argument_error(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        realcount.main(argv)
    assert exited.value.code == 2
    assert "--cprofile is for --perf --no-record" in capsys.readouterr().err

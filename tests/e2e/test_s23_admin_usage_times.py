"""Session 23's adversarial audit: GET /admin/usage and `usage` read `since`/`until` with
`float()`, so `nan`, `inf` and `1e400` were taken and echoed into a 200 JSON answer as
`"since": NaN` / `Infinity` (JSON no parser reads: `JSON.parse`, `jq`, orjson all fail);
a relative count past a float's range (`10**400` days) was a 500 with a traceback in the
log, and in the CLI a traceback; a bad `until` was reported as `param: since`. Now a 400
naming the parameter, and a one-line error from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from azure_openai_proxy.cli import main
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

NOT_TIMES = ("nan", "NaN", "inf", "-Infinity", "1e400", "9" * 400 + "d", "9" * 5000 + "h")


def test_a_time_that_is_not_finite_is_a_400_naming_its_parameter(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        for param in ("since", "until"):
            for text in NOT_TIMES:
                answer = admin.get("/admin/usage", params={param: text})
                # main: 200 with NaN/Infinity in the body, or a 500 (OverflowError)
                assert answer.status_code == 400, (param, text[:20], answer.text[:200])
                error = orjson.loads(answer.content)["error"]
                assert error["param"] == param and len(error["message"]) < 200
        for text in ("1e308", "-1e308", "0", "7d", "2026-12-01"):  # finite: answered
            answer = admin.get("/admin/usage", params={"since": text, "until": "1e308"})
            assert answer.status_code == 200, (text, answer.text)
            assert orjson.loads(answer.content)["until"] == 1e308  # strict JSON


@pytest.mark.parametrize("text", NOT_TIMES)
def test_the_usage_command_refuses_them_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    assert main(["teams", "create", "--name", "t", "--database", database]) == 0  # made
    capsys.readouterr()
    for flag in ("--since", "--until"):
        assert main(["usage", "--database", database, f"{flag}={text}", "--json"]) == 2
        out = capsys.readouterr()
        assert out.out == "" and "is not a time" in out.err
        assert "Traceback" not in out.err and len(out.err.splitlines()) == 1

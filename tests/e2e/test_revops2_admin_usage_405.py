"""A refused method on `/admin/usage` has the error in its access-log line, as one on
`/admin/keys` has: its 405 line had none (an operator filtering the log by error, or
alerting on it, missed them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_client_gone_mid_write import _Lines, access_lines  # noqa: F401  (fixture)
from tests.e2e.test_virtual_keys import ADMIN_KEY, governed_gateway
from tests.waiting import until


def test_a_405_on_the_usage_report_names_its_error(
        tmp_path: Path, emulator: Emulator, start_gateway: Any,
        access_lines: _Lines) -> None:  # noqa: F811
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        admin = httpx.Client(base_url=governed.server.url, timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        for path in ("/admin/usage", "/admin/keys"):
            answer = admin.put(path)
            assert answer.status_code == 405 and "GET" in answer.headers["allow"]
            assert answer.json()["error"]["message"] == "Method PUT is not allowed."
        until(lambda: len(access_lines.lines) >= 2)
        got = [(line["route"], line["status"], line.get("error")) for line in access_lines.lines]
        assert got == [("admin/usage", 405, "MethodNotAllowed"),  # main: no error
                       ("admin/keys", 405, "MethodNotAllowed")]

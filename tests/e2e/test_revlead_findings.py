"""Session 23's review (revlead) of ccb5dfb: with governance on and no admin key, the
admin API is now built, so a request to /admin/keys, /admin/teams, /admin/limits... is
answered by it, not by the pipeline. Its status and headers are as before (404, same
code; only the message changed), but it is no longer written to the access log: the
pipeline gave it a request id (logged), the admin API's path records none. A scanner
probing /admin/* vanished from the log. With no admin key in force the pipeline answers
/admin/* again, as before ccb5dfb (its message and its log line)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_refused_mid_request import access_lines  # noqa: F401  (fixture)
from tests.support import ServerThread
from tests.waiting import until


def test_an_admin_route_probed_with_the_admin_api_off_is_in_the_access_log(
        tmp_path: Path, emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
        access_lines: list[dict[str, Any]]) -> None:  # noqa: F811
    server = start_gateway(gateway_settings(emulator.url, database=f"sqlite://{tmp_path}/gw.db"))
    assert httpx.get(server.url + "/admin/keys").status_code == 404
    assert httpx.get(server.url + "/v1/nope").status_code == 404
    until(lambda: len(access_lines) >= 1, timeout=10, message="no access log line")
    assert [line["status"] for line in access_lines] == [404, 404]  # main: [404]

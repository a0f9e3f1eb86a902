"""An admin request body past the admin API's 1 MiB: a 413 `request_too_large`, as a
model request past `max_body_bytes` gets; it was a 400 saying the body was too large, a
status clients (and retry logic) read as a malformed request. Nothing is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin


def test_a_body_past_the_limit_is_a_413_and_stores_nothing(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        big = {"name": "big", "metadata": {"note": "x" * (1024 * 1024)}}
        for method, path in (("POST", "/admin/keys"), ("POST", "/admin/teams")):
            answer = admin.request(method, path, json=big)
            assert answer.status_code == 413, answer.text  # main: 400
            error = answer.json()["error"]
            assert error["code"] == "request_too_large" and "1048576 bytes" in error["message"]
        assert admin.get("/admin/keys").json()["data"] == []
        assert admin.get("/admin/teams").json()["data"] == []
        assert admin.post("/admin/keys", json={"name": "small"}).status_code == 201

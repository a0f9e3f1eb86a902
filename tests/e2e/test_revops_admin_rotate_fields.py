"""`POST /admin/keys/{id}/rotate` with a field it does not know is a 400 naming it, as
every other admin write is: `{"grace": "24h"}` (the CLI's `--grace 24h`) was read as no
grace at all, so the rotation meant to leave the old secret working a day cut it off at
once (its app got 401s), and the answer said nothing of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status, governed_admin


def test_a_rotation_with_a_field_it_does_not_know_is_refused(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        old = admin.post("/admin/keys", json={"name": "app"}).json()["key"]
        for body in ({"grace": "24h"}, {"grace_seconds": 60, "grace_period": 86400}):
            answer = admin.post("/admin/keys/app/rotate", json=body)
            assert answer.status_code == 400, answer.text  # main: 200, grace 0 or 60
            error = answer.json()["error"]
            assert error["param"] in ("grace", "grace_period") and "Unknown field" in error["message"]
        assert chat_status(url, old) == 200  # main: 401, rotated without grace
        rotated = admin.post("/admin/keys/app/rotate", json={"grace_seconds": 3600})
        assert rotated.status_code == 200
        assert chat_status(url, old) == 200 and chat_status(url, rotated.json()["key"]) == 200
        assert admin.post("/admin/keys/app/rotate").status_code == 200  # no body: no grace
        assert chat_status(url, old) == 401

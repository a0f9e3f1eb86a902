"""`DELETE /admin/limits/{subject}` with fields in its body was answered as if the body
were not there (the reset done, the fields ignored), while a DELETE of a key or a team
with fields is a 400 since session 27: the same rule here. A body with fields is a 400
naming the route and resets nothing; no body, an empty one or `{}` still reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status, governed_admin


def test_a_limits_delete_with_fields_is_refused_and_resets_nothing(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        # One request a minute: the second is refused until a reset (a refill takes 60 s).
        made = admin.post("/admin/keys", json={"name": "k", "rpm": 1}).json()
        secret, subject = made["key"], "key:" + made["id"]
        assert chat_status(url, secret) == 200
        assert chat_status(url, secret) == 429
        for body in (b'{"tokens": 0}', b'{"subject": "key:other", "all": true}'):
            refused = admin.request("DELETE", f"/admin/limits/{subject}", content=body,
                                    headers={"content-type": "application/json"})
            assert refused.status_code == 400, refused.text  # main: 200, reset
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith("DELETE /admin/limits/{subject} takes no fields")
            assert error["param"] in ("tokens", "all")
        assert admin.request("DELETE", f"/admin/limits/{subject}",
                             content=b"[1]").status_code == 400  # not an object
        assert chat_status(url, secret) == 429  # nothing was reset
        for body in (None, b"", b" {} "):
            reset = admin.request("DELETE", f"/admin/limits/{subject}", content=body)
            assert reset.status_code == 200 and reset.json()["reset"] is True, reset.text
            assert chat_status(url, secret) == 200
            assert chat_status(url, secret) == 429

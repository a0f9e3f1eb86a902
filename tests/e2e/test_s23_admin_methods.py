"""Session 23's adversarial audit of the admin API's edges: `GET /admin/usage` answered a
client key or a virtual key with 401 "needs the admin key" where the README and every
other admin route say 403 (the key is valid, for the models); HEAD, which HTTP servers
must take wherever GET is (RFC 9110 9.3.2) and which /admin/usage and the gateway's own
routes take, was a 405 on /admin/keys, /admin/teams and /admin/limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_admin_api import governed_admin


def test_a_model_key_is_forbidden_the_usage_too(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        secret = admin.post("/admin/keys", json={"name": "user"}).json()["key"]
        for key, status in ((CLIENT_KEY, 403), (secret, 403), ("wrong", 401)):
            for path in ("/admin/usage", "/admin/keys"):
                answer = httpx.get(url + path, headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == status, (path, answer.text)  # main: usage 401
                assert secret not in answer.text and answer.json()["error"]["message"]
        assert admin.get("/admin/usage").status_code == 200


def test_head_is_a_get_without_its_body(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        key = admin.post("/admin/keys", json={"name": "k"}).json()["id"]
        team = admin.post("/admin/teams", json={"name": "t"}).json()["id"]
        for path in ("/admin/keys", f"/admin/keys/{key}", "/admin/teams", f"/admin/teams/{team}",
                     "/admin/limits", "/admin/usage"):
            got, head = admin.get(path), admin.head(path)
            assert head.status_code == got.status_code == 200, (path, head.text)  # main: 405
            assert head.content == b"" and head.headers["content-type"] == "application/json"
        assert admin.head("/admin/keys/nope").status_code == 404
        assert admin.head(f"/admin/keys/{key}/rotate").status_code == 405  # a POST only
        assert admin.get(f"/admin/keys/{key}").status_code == 200  # HEAD changed nothing

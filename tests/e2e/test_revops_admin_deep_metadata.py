"""Metadata as deep as the admin API takes it (254 levels: what orjson writes, dd8ba16)
is answered, not a 500: the answer nests it one level deeper (the key's view) or three
(a list's `data`), past what orjson writes. A create was stored and answered 500, its
secret never shown; then every GET /admin/keys (and of that key) was a 500 until it was
revoked, and a team's the same for /admin/teams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

DEPTH = 254  # the deepest the admin API (and `keys create --metadata`) takes


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, dict):
        depth, value = depth + 1, next(iter(value.values()))
    return depth


def test_the_deepest_metadata_taken_is_answered_everywhere(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        team = admin.post("/admin/teams", json={"name": "deep", "metadata": nested(DEPTH)})
        assert team.status_code == 201, team.text  # main: 500, stored
        key = admin.post("/admin/keys", json={"name": "deep", "team": "deep",
                                              "metadata": nested(DEPTH)})
        assert key.status_code == 201, key.text  # main: 500, stored: its secret never shown
        secret = key.json()["key"]
        for path in ("/admin/keys", "/admin/teams"):
            listed = admin.get(path)
            assert listed.status_code == 200, listed.text  # main: 500 from then on
            assert [depth_of(item["metadata"]) for item in listed.json()["data"]] == [DEPTH]
            shown = admin.get(f"{path}/deep")
            assert shown.status_code == 200 and depth_of(shown.json()["metadata"]) == DEPTH
        patched = admin.patch("/admin/keys/deep", json={"rpm": 5})
        assert patched.status_code == 200 and depth_of(patched.json()["metadata"]) == DEPTH
        chat = httpx.post(url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "gpt-4o",
                                "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        too_deep = admin.post("/admin/keys", json={"name": "deeper",
                                                   "metadata": nested(DEPTH + 1)})
        assert too_deep.status_code == 400 and "254 levels" in too_deep.text

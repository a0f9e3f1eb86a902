"""The admin API's requests in the access log, as every other request is: a guessed
admin key (401), a client key trying it (403), a key minted, rotated or revoked, a usage
report read. They left no line at all, so an operator could not see from the log who
tried the admin key, or when a key was revoked. A line names the route by its shape
(`admin/keys/{id}`), never the key or name in the path, and never a secret; the usage
ledger does not count these requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_client_gone_mid_write import _Lines, access_lines  # noqa: F401  (fixture)
from tests.e2e.test_virtual_keys import ADMIN_KEY, governed_gateway
from tests.waiting import until


def test_every_admin_request_has_an_access_log_line(
        tmp_path: Path, emulator: Emulator, start_gateway: Any,
        access_lines: _Lines) -> None:  # noqa: F811
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        url = governed.server.url
        admin = httpx.Client(base_url=url, timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        created = admin.post("/admin/keys", json={"name": "alice smith"})
        secret = created.json()["key"]
        rotated = admin.post("/admin/keys/alice%20smith/rotate", json={}).json()["key"]
        assert admin.get("/admin/teams/nobody").status_code == 404
        assert httpx.get(url + "/admin/keys", headers={
            "Authorization": "Bearer guessed-admin-key"}).status_code == 401
        assert httpx.get(url + "/admin/keys", headers={
            "Authorization": f"Bearer {CLIENT_KEY}"}).status_code == 403
        assert admin.get("/admin/limits").status_code == 200
        assert admin.get("/admin/usage").status_code in (200, 503)
        assert admin.delete(f"/admin/keys/{created.json()['id']}").status_code == 200
        wanted = [("POST", "admin/keys", 201), ("POST", "admin/keys/{id}/rotate", 200),
                  ("GET", "admin/teams/{id}", 404), ("GET", "admin/keys", 401),
                  ("GET", "admin/keys", 403), ("GET", "admin/limits", 200),
                  ("GET", "admin/usage", 200), ("DELETE", "admin/keys/{id}", 200)]
        until(lambda: len(access_lines.lines) >= len(wanted))
        lines = access_lines.lines
        got = [(line["method"], line["route"], line["status"]) for line in lines]
        if got[6][2] == 503:  # the usage ledger not made yet: still a line
            got[6] = (*got[6][:2], 200)
        assert got == wanted
        assert lines[3]["error"] == "AuthenticationFailed"  # main: no line at all
        assert all(line["request_id"] for line in lines)
        text = orjson.dumps(lines).decode()
        for never in (ADMIN_KEY, "guessed-admin-key", CLIENT_KEY, secret, rotated, "alice"):
            assert never not in text
        # Not usage: the ledger records the one chat after them, and none of them.
        chat = httpx.post(url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200

        def recorded() -> int:
            rows = admin.get("/admin/usage", params={"by": "key"}).json()["data"]
            return sum(row["requests"] for row in rows)

        until(lambda: recorded() > 0)  # in order: the admin requests' records came first
        assert recorded() == 1

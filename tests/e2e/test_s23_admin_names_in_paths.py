"""Session 23's adversarial audit: the admin API finds a key or team by its name too
(`GET /admin/keys/{id or name}`), but read the path's segment without percent-decoding
it, so a name a client must encode in a URL (a space, `&`, `/`, `é`) was never found:
`GET /admin/teams/R%26D` was a 404 "no team 'R%26D'" for a team the list shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin


def test_a_name_is_found_percent_encoded_in_the_path(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        team_name, key_name = "R&D / Zürich", "alice smith 50%"
        team = admin.post("/admin/teams", json={"name": team_name}).json()
        key = admin.post("/admin/keys", json={"name": key_name, "team": team_name}).json()
        teams, keys = f"/admin/teams/{quote(team_name, safe='')}", \
            f"/admin/keys/{quote(key_name, safe='')}"
        assert "%20" in keys and "%26" in teams and "%2F" in teams
        shown = admin.get(keys)
        assert shown.status_code == 200, shown.text  # main: 404 "no key 'alice%20smith%2050%25'"
        assert shown.json()["id"] == key["id"]
        assert admin.get(teams).json()["id"] == team["id"]
        assert admin.patch(keys, json={"rpm": 5}).json()["limits"]["rpm"] == 5
        assert admin.patch(teams, json={"tpm": 1000}).json()["limits"]["tpm"] == 1000
        rotated = admin.post(keys + "/rotate", json={})
        assert rotated.status_code == 200 and rotated.json()["key"] != key["key"]
        assert admin.delete(keys).json() == {"id": key["id"], "object": "key", "deleted": True}
        assert admin.delete(teams).json()["deleted"] is True
        # An id is still an id, and a name that is not there still a 404 naming it.
        missing = admin.get("/admin/keys/no%20one")
        assert missing.status_code == 404 and "'no one'" in missing.json()["error"]["message"]

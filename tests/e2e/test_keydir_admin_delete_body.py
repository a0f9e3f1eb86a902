"""A DELETE on an admin key or team with fields in its body was answered as if the body
were not there: `DELETE /admin/keys/alice {"blocked": true}` revoked alice for good. Its
sender meant something by the fields, and a revocation cannot be undone: such a DELETE
is a 400 naming the reversible way, and deletes nothing. No body, an empty one, or `{}`
(clients that always send JSON) still delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin


def test_a_delete_with_fields_is_refused_and_deletes_nothing(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        team = admin.post("/admin/teams", json={"name": "t"}).json()["id"]
        keys = [admin.post("/admin/keys", json={"name": f"k{i}"}).json()["id"] for i in range(4)]
        for path, body in ((f"/admin/keys/{keys[0]}", b'{"blocked": true}'),
                           (f"/admin/keys/{keys[0]}", b'{"grace_seconds": 3600}'),
                           (f"/admin/teams/{team}", b'{"force": true}')):
            refused = admin.request("DELETE", path, content=body,
                                    headers={"content-type": "application/json"})
            assert refused.status_code == 400, refused.text  # main: 200, deleted
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error" and "takes no fields" in error["message"]
        assert "PATCH it with" in admin.request(
            "DELETE", f"/admin/keys/{keys[0]}", content=b'{"blocked": true}').json()["error"]["message"]
        assert admin.get(f"/admin/keys/{keys[0]}").status_code == 200  # still there
        assert admin.get(f"/admin/teams/{team}").status_code == 200
        not_json = admin.request("DELETE", f"/admin/keys/{keys[0]}", content=b"yes")
        assert not_json.status_code == 400 and admin.get(f"/admin/keys/{keys[0]}").status_code == 200
        for key, body in zip(keys, (None, b"", b"  {} ", b"{}"), strict=True):
            deleted = admin.request("DELETE", f"/admin/keys/{key}", content=body)
            assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
        assert admin.request("DELETE", f"/admin/teams/{team}", content=b"{}").status_code == 200
        assert admin.get("/admin/keys").json()["data"] == []

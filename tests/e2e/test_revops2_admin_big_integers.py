"""An integer past 64 bits in admin metadata is a 400, as `keys create --metadata`'s is
("its integers within 64 bits", the API's own message): orjson read it as a float, so
it was stored rounded (2**64 + 1 came back 1.8446744073709552e+19) and answered 201."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

EDGES = {"top": 2**64 - 1, "bottom": -(2**63), "float": 1e29}  # what the store writes


def test_an_integer_past_64_bits_in_metadata_is_refused(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_, admin):
        key = admin.post("/admin/keys", json={"name": "app", "metadata": EDGES})
        assert key.status_code == 201 and key.json()["metadata"] == EDGES, key.text
        for big in (2**64 + 1, -(2**63) - 1, 10**30):
            for method, path in (("POST", "/admin/keys"), ("POST", "/admin/teams"),
                                 ("PATCH", "/admin/keys/app")):
                answer = admin.request(method, path, json={
                    "name": "other", "metadata": {"deep": [{"n": big}]}})
                assert answer.status_code == 400, (big, path, answer.text)  # main: 201/200
                assert "within 64 bits" in answer.json()["error"]["message"]
        assert admin.get("/admin/keys/app").json()["metadata"] == EDGES  # unchanged
        assert [k["name"] for k in admin.get("/admin/keys").json()["data"]] == ["app"]
        assert admin.get("/admin/teams").json()["data"] == []

"""Session 16's bad-input sweep of the admin API: a key's expiry or a rotation's grace
past what a time can show was stored, then its answer (and every list naming the key)
was a 500, the new secret never shown; a huge grace kept a leaked secret valid for
ever. Now a 400 naming the field, nothing stored; the CLI refuses the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.cli import main
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import ADMIN_KEY, governed_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}


@pytest.mark.parametrize("expires", [
    '"9999999d"', "1e308", "100000000000000000000000000000", "-1e300",
    '"9999-12-31T23:59:59-05:00"', '"0001-01-01T00:00:00+01:00"', '"99999999999999999999w"',
])
def test_an_expiry_no_time_can_show_is_refused_and_nothing_stored(
        tmp_path: Path, emulator: Emulator, start_gateway: Any, expires: str) -> None:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        admin = httpx.Client(base_url=governed.server.url, headers=ADMIN, timeout=10)
        made = admin.post("/admin/keys", content=b'{"name": "far", "expires": %b}'
                          % expires.encode())
        assert made.status_code == 400, made.text
        assert made.json()["error"]["param"] == "expires"
        listed = admin.get("/admin/keys")
        assert listed.status_code == 200 and listed.json()["data"] == []
        kept = admin.post("/admin/keys", json={"name": "near", "expires": "30d"})
        assert kept.status_code == 201
        changed = admin.patch(f"/admin/keys/{kept.json()['id']}",
                              content=b'{"expires": %b}' % expires.encode())
        assert changed.status_code == 400, changed.text
        assert admin.get("/admin/keys").status_code == 200


def test_a_grace_past_a_year_is_refused_and_the_secret_not_rotated(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        admin = httpx.Client(base_url=governed.server.url, headers=ADMIN, timeout=10)
        key = admin.post("/admin/keys", json={"name": "rot"}).json()
        for grace in (b"1e300", b"31708801", b"-1"):
            rotated = admin.post(f"/admin/keys/{key['id']}/rotate",
                                 content=b'{"grace_seconds": %b}' % grace)
            assert rotated.status_code == 400, rotated.text
            assert rotated.json()["error"]["param"] == "grace_seconds"
        shown = admin.get(f"/admin/keys/{key['id']}")
        assert shown.status_code == 200
        assert "previous_secret_valid_until" not in shown.json()  # nothing rotated
        rotated = admin.post(f"/admin/keys/{key['id']}/rotate", json={"grace_seconds": 3600})
        assert rotated.status_code == 200 and rotated.json()["key"] != key["key"]


def test_the_cli_refuses_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    assert main(["keys", "create", "--name", "far", "--expires", "9999999d",
                 "--database", database]) == 2
    assert "expires" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "near", "--database", database, "--json"]) == 0
    made = capsys.readouterr().out
    assert main(["keys", "rotate", "near", "--grace", "9999d", "--database", database]) == 2
    assert "grace" in capsys.readouterr().err
    assert made

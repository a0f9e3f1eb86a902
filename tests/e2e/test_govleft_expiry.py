"""A key's expiry already past (governance/keys.py `parse_expiry`, `expiry_note`): a key
created with one was stored and answered 201 (the CLI printed its secret) though it was
dead on arrival, every request with it a 401. Now the admin API and the CLI refuse it
(400 naming `expires`, exit 2), nothing stored; an update may still expire a key now (a
deliberate "expire now"), and its answer says the key is expired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.cli import main
from tests.e2e.conftest import Emulator
from tests.e2e.test_gov16_admin_times import ADMIN
from tests.e2e.test_virtual_keys import governed_gateway

PAST = ["0d", "2020-01-01T00:00:00Z", 1.0]


def test_the_admin_api_refuses_a_past_expiry_on_create_and_says_so_on_update(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        admin = httpx.Client(base_url=governed.server.url, headers=ADMIN, timeout=10)
        for expires in PAST:
            made = admin.post("/admin/keys", json={"name": "late", "expires": expires})
            assert made.status_code == 400, made.text
            error = made.json()["error"]
            assert error["param"] == "expires" and "later than now" in error["message"]
        assert admin.get("/admin/keys").json()["data"] == []
        kept = admin.post("/admin/keys", json={"name": "near", "expires": "30d"})
        assert kept.status_code == 201 and "warning" not in kept.json()
        key_id, secret = kept.json()["id"], kept.json()["key"]
        later = admin.patch(f"/admin/keys/{key_id}", json={"expires": "1h"})
        assert later.status_code == 200 and "warning" not in later.json()
        ended = admin.patch(f"/admin/keys/{key_id}", json={"expires_at": "2020-01-01"})
        assert ended.status_code == 200, ended.text
        assert ended.json()["expires_at"] == "2020-01-01T00:00:00+00:00"
        assert "expired" in ended.json()["warning"]
        refused = httpx.post(f"{governed.server.url}/v1/chat/completions",
                             headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "gpt-4o", "messages": [], "max_tokens": 1})
        assert refused.status_code == 401  # expired now, as the answer said


@pytest.mark.parametrize("expires", ["0d", "2020-01-01"])
def test_the_cli_refuses_the_same_and_says_so_on_update(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], expires: str) -> None:
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    assert main(["keys", "create", "--name", "late", "--expires", expires,
                 "--database", database]) == 2
    err = capsys.readouterr().err
    assert "later than now" in err and "Traceback" not in err
    assert main(["keys", "create", "--name", "near", "--expires", "30d", "--json",
                 "--database", database]) == 0
    key_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["keys", "list", "--json", "--database", database]) == 0
    assert [key["name"] for key in json.loads(capsys.readouterr().out)] == ["near"]
    assert main(["keys", "update", key_id, "--expires", expires, "--database", database]) == 0
    shown = capsys.readouterr()
    assert "expired" in shown.err and "expired" in shown.out  # the note, and the STATE

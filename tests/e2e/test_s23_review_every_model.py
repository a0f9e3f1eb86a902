"""Session 23's review of the admin API audit: `keys create --models '*'` stored the
allow-list ["*"] while `keys update --models '*'` cleared the list ("every model", as its
help says and as `keys list` shows a key without a list: `*`). ["*"] matches every model
yet counts as an allow-list: objects of unknown owner are refused to the key, its
uploads are routed by the list. Now `*` alone is every model wherever a list is given
(create, update, the admin API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.cli import main
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status, governed_admin


def _models(capsys: pytest.CaptureFixture[str], database: list[str], key: str) -> list[str]:
    capsys.readouterr()
    assert main(["keys", "show", key, "--json", *database]) == 0
    models: list[str] = json.loads(capsys.readouterr().out)["models"]
    return models


def test_star_is_every_model_for_create_and_update(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    assert main(["keys", "create", "--name", "made", "--models", "*", *database]) == 0
    assert _models(capsys, database, "made") == []  # main: ["*"]
    assert main(["keys", "create", "--name", "changed", "--models", "gpt-4o", *database]) == 0
    assert main(["keys", "update", "changed", "--models", " * ", *database]) == 0
    assert _models(capsys, database, "changed") == []
    assert main(["keys", "update", "changed", "--models", "gpt-4o,o3*", *database]) == 0
    assert _models(capsys, database, "changed") == ["gpt-4o", "o3*"]
    assert main(["keys", "update", "changed", "--models", "", *database]) == 0
    assert _models(capsys, database, "changed") == []
    # `*` beside other names is a list like any other
    assert main(["keys", "update", "changed", "--models", "gpt-4o,*", *database]) == 0
    assert _models(capsys, database, "changed") == ["gpt-4o", "*"]


def test_the_admin_api_reads_star_the_same(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        for models in (["*"], "*", ["*", " * "]):
            made = admin.post("/admin/keys", json={"name": "star", "models": models})
            assert made.status_code == 201 and made.json()["models"] == [], made.text  # main: ["*"]
            assert chat_status(url, made.json()["key"], "o3-mini") == 200
        key = admin.post("/admin/keys", json={"name": "listed", "models": ["gpt-4o"]}).json()
        changed = admin.patch(f"/admin/keys/{key['id']}", json={"models": ["*"]})
        assert changed.status_code == 200 and changed.json()["models"] == []
        assert chat_status(url, key["key"], "o3-mini") == 200

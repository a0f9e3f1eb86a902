"""Session 23's adversarial audit: an allow-list whose names are all empty (`"models":
[""]`, what a form with nothing typed sends; `"models": ","`; `--models ' , '`) was read
as no allow-list at all, so the key could call every model: an allow-list that failed
open. Now a 400 (CLI: one line, exit 2), and a key's list is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.cli import main
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status, governed_admin

EMPTY: list[Any] = [[""], ["  "], ["gpt-4o", ""], ",", " , "]


def test_an_allow_list_of_empty_names_is_refused_not_every_model(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        for models in EMPTY:
            made = admin.post("/admin/keys", json={"name": "form", "models": models})
            assert made.status_code == 400, (models, made.text)  # main: 201, every model
            assert "models" in made.json()["error"]["message"]
        assert admin.get("/admin/keys").json()["data"] == []
        key = admin.post("/admin/keys", json={"name": "ok", "models": [" gpt-4o "]}).json()
        assert key["models"] == ["gpt-4o"]  # trimmed, as the comma form is
        for models in EMPTY:
            changed = admin.patch(f"/admin/keys/{key['id']}", json={"models": models})
            assert changed.status_code == 400, (models, changed.text)
        assert chat_status(url, key["key"]) == 200
        assert chat_status(url, key["key"], "o3-mini") == 404  # main: 200
        for every in ([], None, ""):  # the ways to say "every model" still say it
            changed = admin.patch(f"/admin/keys/{key['id']}", json={"models": every})
            assert changed.status_code == 200 and changed.json()["models"] == []


@pytest.mark.parametrize("models", [",", " , ", ",,,"])
def test_the_cli_refuses_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  models: str) -> None:
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    assert main(["keys", "create", "--name", "k", f"--models={models}", *database]) == 2
    assert "models" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "k", "--models", "gpt-4o", *database]) == 0
    assert main(["keys", "update", "k", f"--models={models}", *database]) == 2
    assert main(["keys", "show", "k", "--json", *database]) == 0
    assert '"models": ["gpt-4o"]' in capsys.readouterr().out

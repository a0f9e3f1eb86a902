"""Session 23's adversarial audit of key and team names: the `keys`/`teams` commands took
any `--name` (empty, blanks, 10,000 characters: the admin API refuses these), and both
took control characters, which `keys list` and `teams list` then wrote raw to the
operator's terminal (`ESC [ 2 J` clears it; U+009B starts an escape sequence too). Now
both refuse such a name, and a table shows '?' for a control character already stored."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

CONTROLS = ("clear\x1b[2J", "csi\x9b31m", "nul\x00", "bell\x07", "del\x7f", "line\nbreak")


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, *CONTROLS])
def test_the_cli_refuses_a_name_the_admin_api_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    assert main(["keys", "create", "--name", "ok", *database]) == 0
    assert main(["teams", "create", "--name", "ok", *database]) == 0
    capsys.readouterr()
    for argv in (["keys", "create", f"--name={name}"], ["teams", "create", f"--name={name}"],
                 ["keys", "update", "ok", f"--name={name}"],
                 ["teams", "update", "ok", f"--name={name}"]):
        assert main([*argv, *database]) == 2, argv[:2]  # main: 0, stored
        err = capsys.readouterr().err
        assert "name must" in err and len(err.splitlines()) == 1
    for listed in (["keys", "list"], ["teams", "list"]):
        assert main([*listed, *database, "--json"]) == 0
        assert [v["name"] for v in json.loads(capsys.readouterr().out)] == ["ok"]


def test_the_admin_api_refuses_control_characters(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        for path in ("/admin/keys", "/admin/teams"):
            for name in CONTROLS:
                made = admin.post(path, json={"name": name})
                assert made.status_code == 400, (path, name, made.text)  # main: 201
                assert "control" in made.json()["error"]["message"]
            assert admin.post(path, json={"name": "Zoë's team — ok"}).status_code == 201
        key = admin.get("/admin/keys").json()["data"][0]["id"]
        renamed = admin.patch(f"/admin/keys/{key}", json={"name": "x\x1b]0;pwned\x07"})
        assert renamed.status_code == 400


def test_a_table_shows_a_stored_control_character_as_a_question_mark(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.db"
    store = KeyStore.open(path)  # as written before names were checked
    team = store.create_team("t\x1b[2J", now=time.time())
    store.create_key("k\x9b31m\x1b[2J", team=team.id, models=("gpt\x1b[5m",), now=time.time())
    store.close()
    for listed in (["keys", "list"], ["teams", "list"], ["keys", "show", "k\x9b31m\x1b[2J"]):
        assert main([*listed, "--database", f"sqlite:///{path}"]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x9b" not in out, out  # main: written raw
        assert "?[2J" in out

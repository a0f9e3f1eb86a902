"""Session 23's adversarial audit of the `keys` and `teams` commands: a limit past 64 bits
(`--tpm 99999999999999999999999`) and a `--database` that is a directory or not a
database printed a Python traceback (exit 1) instead of one line; the admin API stored
an rpm, tpm or parallel limit up to 2**64 - 1, which the limiter (doubles) cannot count
exactly and the CLI could not even write past; a `--database` URL with SQLAlchemy's
options (`?mode=ro`) or `:memory:` was a new, empty file of that name. Now one line,
exit 2, nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.governance.keys import MAX_LIMIT
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

HUGE = str(10**23)


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-300:]
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("argv", [
    ["keys", "create", "--name", "x", "--tpm", HUGE],
    ["keys", "create", "--name", "x", "--parallel", str(2**64)],
    ["teams", "create", "--name", "t", "--rpm", HUGE],
    ["keys", "create", "--name", "x", "--rpm", str(MAX_LIMIT + 1)],
])
def test_a_limit_past_what_is_counted_is_one_line_and_nothing_stored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    assert main([*argv, *database]) == 2  # main: a traceback, exit 1 (or stored)
    _one_line(capsys, "from 1 to")
    for listed in (["keys", "list"], ["teams", "list"]):
        assert main([*listed, *database, "--json"]) == 0
        assert capsys.readouterr().out.strip() == "[]"
    assert main(["keys", "create", "--name", "x", "--tpm", str(MAX_LIMIT), *database]) == 0


def test_a_database_that_cannot_be_opened_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "config.yaml"
    text.write_text("listen: 127.0.0.1:1\n" * 200)
    for url in (f"sqlite:///{tmp_path}", f"sqlite:///{text}"):
        for argv in (["keys", "list"], ["teams", "create", "--name", "t"]):
            assert main([*argv, "--database", url]) == 2, url  # main: a traceback, exit 1
            _one_line(capsys, "cannot open")


def test_the_admin_api_refuses_the_same_limits(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        for field in ("rpm", "tpm", "max_parallel"):
            for path in ("/admin/keys", "/admin/teams"):
                made = admin.post(path, json={"name": "big", field: 2**64 - 1})
                assert made.status_code == 400, made.text  # main: 201, stored
                assert field in made.json()["error"]["message"]
        assert admin.get("/admin/keys").json()["data"] == []
        assert admin.get("/admin/teams").json()["data"] == []


@pytest.mark.parametrize("url", ["sqlite:///{dir}/gw.db?mode=ro", "sqlite:///{dir}/gw.db?timeout=30",
                                 "sqlite:///:memory:", "sqlite:///{dir}/gw.db#x"])
def test_a_database_url_with_options_is_refused_not_a_new_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    """`?mode=ro` (SQLAlchemy's form) was part of the file's name: a second, empty
    database `gw.db?mode=ro` beside the one that holds the keys."""
    url = url.format(dir=tmp_path)
    assert main(["keys", "create", "--name", "k", "--database", f"sqlite:///{tmp_path}/gw.db"]) == 0
    capsys.readouterr()
    for argv in (["keys", "list"], ["usage"]):
        assert main([*argv, "--database", url]) == 2, argv  # main: 0, an empty list
        _one_line(capsys, "without `?`")
    assert sorted(p.name for p in tmp_path.iterdir() if "?" in p.name or "#" in p.name) == []


@pytest.mark.parametrize("metadata", ['{"a": NaN}', '{"a": [Infinity]}', '{"a": -Infinity}'])
def test_metadata_that_is_not_json_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], metadata: str) -> None:
    """Python's json reads NaN and Infinity: `keys create --json` printed them (JSON no
    parser reads) and the store wrote them as null."""
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    for argv in (["keys", "create", "--name", "k"], ["teams", "create", "--name", "t"]):
        assert main([*argv, "--metadata", metadata, *database, "--json"]) == 2  # main: 0
        _one_line(capsys, "NaN or Infinity")


def test_listing_a_database_that_is_not_there_says_so_and_makes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped path made an empty database (and its directories) and listed no keys,
    as if every key were gone."""
    typo = tmp_path / "var" / "gatway.db"
    for argv in (["keys", "list"], ["teams", "list"], ["keys", "show", "bob"],
                 ["teams", "show", "ops"]):
        assert main([*argv, "--database", f"sqlite:///{typo}"]) == 1  # main: 0 (or "no key")
        _one_line(capsys, "no database at", str(typo))
    assert list(tmp_path.iterdir()) == []  # main: var/gatway.db made
    assert main(["teams", "create", "--name", "ops", "--database", f"sqlite:///{typo}"]) == 0
    assert main(["teams", "list", "--database", f"sqlite:///{typo}"]) == 0  # a write makes it

"""`keys list|show` and `teams list|show` by an operator who may read the gateway's
database but not write it (the gateway's data volume, another user's file): they
answered "cannot open ...: attempt to write a readonly database" (exit 2), since opening
the store wrote its schema, as `usage` did before it read read-only. Now they read, and
write nothing; the writes still say in one line why they cannot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import azure_openai_proxy.runtime.keys_cli  # noqa: F401  (imported before the uid changes)
from azure_openai_proxy.cli import main
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.support import as_nobody, readable_directory

READS = (["keys", "list"], ["keys", "show", "alice"], ["teams", "list"],
         ["teams", "show", "research"], ["keys", "list", "--json"])


@pytest.fixture
def database() -> Iterator[Path]:
    """A database with a key and a team, in a directory all may read; the file is the
    test's to shut."""
    with readable_directory() as top:
        path = top / "gateway.db"
        store = KeyStore.open(path)
        team = store.create_team("research", limits=Limits(rpm=600), now=1.0e9)
        store.create_key("alice", team=team.id, now=1.0e9)
        store.close()
        yield path


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def test_a_database_the_operator_may_only_read_is_listed(
        database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database.chmod(0o444)
    before = _files(database)
    url = f"sqlite://{database}"
    with as_nobody():
        codes = [main([*argv, "--database", url]) for argv in READS]
    out, err = capsys.readouterr()
    assert codes == [0] * len(READS), err  # main: 2, "attempt to write a readonly database"
    assert out.count("alice") == 3 and out.count("research") >= 4 and err == ""
    assert _files(database) == before  # nothing written, no -wal or -shm left


def test_it_is_read_beside_a_running_gateway(
        database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway holds the database open (its -wal and -shm files there) and writes;
    the reader sees what it wrote."""
    gateway = KeyStore.open(database)
    try:
        gateway.create_key("bob", now=1.0e9)
        assert Path(f"{database}-wal").exists()
        for path in database.parent.iterdir():
            path.chmod(0o444)
        with as_nobody():
            code = main(["keys", "list", "--database", f"sqlite://{database}"])
        out, err = capsys.readouterr()
        assert code == 0 and "alice" in out and "bob" in out, err
    finally:
        gateway.close()


def test_a_write_it_may_not_make_is_one_line(
        database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database.chmod(0o444)
    before = _files(database)
    with as_nobody():
        code = main(["keys", "create", "--name", "carol", "--database", f"sqlite://{database}"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "readonly" in err
    assert _files(database) == before


def test_a_database_without_keys_yet_lists_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database the gateway has not made the keys tables in (an empty file): nothing
    to list, and nothing written into it."""
    path = tmp_path / "empty.db"
    path.touch()
    assert main(["keys", "list", "--database", f"sqlite://{path}"]) == 0
    assert main(["teams", "show", "x", "--database", f"sqlite://{path}"]) == 1
    assert "no team 'x'" in capsys.readouterr().err
    assert path.read_bytes() == b""

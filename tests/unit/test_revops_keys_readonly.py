"""`keys list` and `show` read the database read-only (9421807), and a read-only
connection to a WAL database makes its -shm and -wal files when they are not there (the
gateway stopped) and the directory lets it, and cannot remove them after (that is a
writer's close). They stayed, the operator's: on a volume the gateway's user and an
operator may both write (a group's directory, the database file the gateway's own), the
gateway, started again, could no longer write its database ('attempt to write a readonly
database': no key created, no usage recorded). With no -wal file no writer has the
database open: it is read as it is on disk, and nothing is made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import azure_openai_proxy.runtime.keys_cli  # noqa: F401  (imported before the uid changes)
from azure_openai_proxy.cli import main
from azure_openai_proxy.store.keys import KeyStore
from tests.support import as_user, readable_directory

GATEWAY, OPERATOR = 65534, 1000  # two users, when the tests run as root


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory both users may write, and the database the gateway made there and
    stopped (its own file, 0644)."""
    with readable_directory() as top:
        top.chmod(0o777)
        path = top / "gateway.db"
        with as_user(GATEWAY):
            store = KeyStore.open(path)
            store.create_key("alice", now=1.0e9)
            store.close()
        yield path
        top.chmod(0o755)


def test_a_listing_of_a_stopped_database_leaves_no_files(
        shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{shared}"
    with as_user(OPERATOR):
        codes = [main([*argv, "--database", url])
                 for argv in (["keys", "list"], ["keys", "show", "alice"], ["teams", "list"])]
    out, err = capsys.readouterr()
    assert codes == [0, 0, 0] and out.count("alice") == 2, err
    assert sorted(p.name for p in shared.parent.iterdir()) == ["gateway.db"]  # main: -shm, -wal
    with as_user(GATEWAY):  # the gateway starts again and writes
        store = KeyStore.open(shared)
        try:
            store.create_key("bob", now=1.0e9)  # main: attempt to write a readonly database
        finally:
            store.close()


def test_a_listing_beside_a_running_gateway_sees_its_writes(
        shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with as_user(GATEWAY):
        gateway = KeyStore.open(shared)
    try:
        with as_user(GATEWAY):
            gateway.create_key("bob", now=1.0e9)  # in its -wal, not yet in the file
        with as_user(OPERATOR):
            code = main(["keys", "list", "--database", f"sqlite://{shared}"])
        out, err = capsys.readouterr()
        assert code == 0 and "alice" in out and "bob" in out, err
    finally:
        gateway.close()

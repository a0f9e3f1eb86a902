"""With no `database:` set (only an admin key) the gateway's database is the default one:
/var/lib/azure-openai-proxy/gateway.db when that directory is writable by the gateway's
user, else the user's own ~/.local/share/.... `keys list`, `keys show` and `usage`,
run by an operator who may read the gateway's database but not write its directory
(9421807's case), chose by the operator's own access, so they looked in the operator's
home ("no database at ~/.local/share/...", exit 1). The CLI's commands take the data
volume's database when that directory is there, reads and writes alike."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import azure_openai_proxy.runtime.keys_cli  # (imported before the uid changes)
import azure_openai_proxy.runtime.usage_cli  # noqa: F401
from azure_openai_proxy.cli import main
from azure_openai_proxy.store import sqlite
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.support import readable_directory

NOBODY = 65534


@contextmanager
def operator() -> Iterator[None]:
    """Nobody, the real user too (os.access asks for it; `as_nobody` changes only the
    effective one), root kept as the saved one to come back to."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to be another user")
    os.setresgid(NOBODY, NOBODY, 0)
    os.setresuid(NOBODY, NOBODY, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)


@pytest.fixture
def volume(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The data volume (root's, 0755: nobody reads it) holding the gateway's database,
    and a config file with an admin key and no `database:`."""
    with readable_directory() as top, readable_directory() as home:
        monkeypatch.setattr(sqlite, "DATA_VOLUME", top)
        monkeypatch.setenv("XDG_DATA_HOME", str(home))  # the operator's own: empty
        store = KeyStore.open(top / "gateway.db")
        store.create_key("alice", now=1.0e9)
        store.close()
        LedgerStore.open(top / "gateway.db").close()  # its ledger's tables, as a start makes
        config = top / "config.yaml"
        config.write_text("endpoint: https://x.openai.azure.com/\n"
                          "admin_key: an-admin-key-of-twenty-chars\n")
        config.chmod(0o644)
        home.chmod(0o777)  # the operator's own, where its writes go
        yield config
        shutil.rmtree(home / "azure-openai-proxy", ignore_errors=True)


@pytest.mark.parametrize("argv", [["keys", "list"], ["keys", "show", "alice"],
                                  ["usage", "--by", "key"]])
def test_a_reader_finds_the_gateways_default_database(
        argv: list[str], volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with operator():
        code = main([*argv, "-c", str(volume)])
    out, err = capsys.readouterr()
    assert code == 0, err  # main: 1, "no database at .../azure-openai-proxy/gateway.db"
    assert err == "" and ("alice" in out or argv[0] == "usage")


def test_a_write_takes_the_same_database_as_a_reading(
        volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The volume it may not write: refused, naming it. It chose by the operator's own
    access (revops): bob was made in the operator's home, his secret printed, exit 0,
    where the gateway never looks, and `keys list` (the volume's) did not show him."""
    with operator():
        code = main(["keys", "create", "--name", "bob", "-c", str(volume)])
        listed = main(["keys", "list", "--json", "-c", str(volume)])
    out, err = capsys.readouterr()
    assert code == 2 and f"cannot open {volume.parent / 'gateway.db'}: " in err, err
    assert "key: sk-aop-" not in out and '"bob"' not in out and listed == 0
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "azure-openai-proxy").exists()
    assert [k.name for k in KeyStore.reader(volume.parent / "gateway.db").list_keys()] == ["alice"]


def test_the_default_database_is_named_as_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`sqlite:///` and an absolute path made `sqlite:////...`: the path was
    `//var/lib/azure-openai-proxy/gateway.db`, and so the CLI's messages named it."""
    monkeypatch.setattr(sqlite, "DATA_VOLUME", tmp_path / "volume")  # not there
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    mine = tmp_path / "azure-openai-proxy" / "gateway.db"
    assert str(sqlite.sqlite_path(sqlite.default_database())) == str(mine)  # main: //tmp/...
    (tmp_path / "volume").mkdir()
    volume = tmp_path / "volume" / "gateway.db"
    assert str(sqlite.sqlite_path(sqlite.default_database())) == str(volume)
    config = tmp_path / "config.yaml"
    config.write_text("endpoint: https://x.openai.azure.com/\n"
                      "admin_key: an-admin-key-of-twenty-chars\n")
    assert main(["keys", "list", "-c", str(config)]) == 1
    assert f"no database at {volume} " in capsys.readouterr().err

"""The CLI's commands beside a gateway whose data volume is closed to the operator (the
image's /var/lib/azure-openai-proxy is 0750, its user's): the database's existence
could not be asked (a PermissionError), which `usage` let out as a traceback and
`keys list --database` too; now one line, exit 2, naming the file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import azure_openai_proxy.runtime.keys_cli  # (imported before the uid changes)
import azure_openai_proxy.runtime.usage_cli  # noqa: F401
from azure_openai_proxy.cli import main
from azure_openai_proxy.store import sqlite
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.support import readable_directory
from tests.unit.test_revops_default_database_reader import operator


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data volume of root's, 0750 (the operator may not look into it), holding the
    gateway's database; a config (readable) with an admin key and no `database:`."""
    with readable_directory() as top, readable_directory() as etc, \
            readable_directory() as home:
        volume = top / "volume"
        volume.mkdir()
        monkeypatch.setattr(sqlite, "DATA_VOLUME", volume)
        monkeypatch.setenv("XDG_DATA_HOME", str(home))
        KeyStore.open(volume / "gateway.db").close()
        LedgerStore.open(volume / "gateway.db").close()
        volume.chmod(0o750)
        (etc / "config.yaml").write_text("endpoint: https://x.openai.azure.com/\n"
                                         "admin_key: an-admin-key-of-twenty-chars\n")
        (etc / "config.yaml").chmod(0o644)
        home.chmod(0o777)
        try:
            yield etc / "config.yaml"
        finally:
            shutil.rmtree(home / "azure-openai-proxy", ignore_errors=True)  # main made it
            volume.chmod(0o755)
            for child in volume.iterdir():
                child.unlink()
            volume.rmdir()


@pytest.mark.parametrize("argv", [["usage"], ["keys", "list"], ["teams", "show", "x"]])
@pytest.mark.parametrize("named", [False, True])
def test_a_database_in_a_directory_closed_to_the_operator_is_one_line(
        argv: list[str], named: bool, closed: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    database = sqlite.DATA_VOLUME / "gateway.db"
    where = ["--database", f"sqlite://{database}"] if named else ["-c", str(closed)]
    with operator():
        code = main([*argv, *where])  # main: PermissionError raised (a traceback)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and f"Permission denied: '{database}'" in err


def test_a_write_is_not_made_in_the_operators_home(
        closed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The volume it may not look into is the gateway's: a key made in the operator's
    own home instead (main: exit 0, its secret printed) would never work."""
    with operator():
        code = main(["keys", "create", "--name", "bob", "-c", str(closed)])
    out, err = capsys.readouterr()
    assert code == 2 and "key: sk-aop-" not in out, out
    assert f"cannot open {sqlite.DATA_VOLUME / 'gateway.db'}: " in err
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "azure-openai-proxy").exists()

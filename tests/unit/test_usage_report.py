"""Usage reports name the keys and teams they list (store/usage_report.py, the `usage`
command, GET /admin/usage): a key id alone tells a reader nothing."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.usage_report import as_csv, as_json, as_table, read_usage


def _record(n: int, key: str | None, team: str | None, cost: float) -> UsageRecord:
    return UsageRecord(time.time() - 60, f"req-{n}", key, team, "gpt-4o", "dep", "https://e/",
                       "chat/completions", 200, prompt_tokens=10, completion_tokens=5,
                       cost_usd=cost, total_ms=3.0, usage_source="measured")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "gw.db"
    keys = KeyStore.open(path)
    team = keys.create_team("research", now=time.time())
    alice, _ = keys.create_key("alice-laptop", team=team.id, now=time.time())
    keys.close()
    ledger = LedgerStore.open(path)
    ledger.write([_record(1, alice.id, team.id, 0.5), _record(2, None, None, 0.25),
                  _record(3, "key-deleted", None, 0.125)])
    ledger.close()
    return path


def test_rows_by_key_and_team_carry_the_name(database: Path) -> None:
    rows = read_usage(database, "key", 0.0, None)
    assert [(r["name"], r["requests"]) for r in rows] == [
        ("alice-laptop", 1), (None, 1), (None, 1)]  # a static key, a deleted key
    assert list(rows[0])[:3] == ["key", "name", "requests"]
    [team] = [r for r in read_usage(database, "team", 0.0, None) if r["team"]]
    assert team["name"] == "research"
    assert "name" not in read_usage(database, "model", 0.0, None)[0]


def test_the_table_csv_and_json_show_the_name(database: Path) -> None:
    rows = read_usage(database, "key", 0.0, None)
    table = as_table("key", rows).splitlines()
    assert table[0].split()[:3] == ["key", "name", "requests"]
    assert table[2].split()[1] == "alice-laptop"
    assert table[-1].split()[:2] == ["total", "3"]
    parsed = list(csv.reader(io.StringIO(as_csv("key", rows))))
    assert parsed[0][:3] == ["key", "name", "requests"]
    assert parsed[1][1:3] == ["alice-laptop", "1"] and parsed[2][1] == ""
    assert json.loads(as_json("key", rows, 0.0, None))["data"][0]["name"] == "alice-laptop"


def test_the_usage_command_names_the_keys(database: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{database}"
    assert main(["usage", "--database", url, "--by", "key"], {}) == 0
    assert "alice-laptop" in capsys.readouterr().out
    assert main(["usage", "--database", url, "--by", "key", "--json"], {}) == 0
    assert json.loads(capsys.readouterr().out)["data"][0]["name"] == "alice-laptop"
    assert main(["usage", "--database", url, "--by", "team", "--csv"], {}) == 0
    assert ",research," in capsys.readouterr().out


def test_a_ledger_without_a_keys_table_has_no_names(tmp_path: Path) -> None:
    path = tmp_path / "ledger-only.db"
    ledger = LedgerStore.open(path)
    ledger.write([_record(1, "key-x", None, 0.5)])
    ledger.close()
    [row] = read_usage(path, "key", 0.0, None)
    assert (row["key"], row["name"]) == ("key-x", None)


def test_a_report_on_an_empty_database_file_writes_nothing_and_says_there_is_no_ledger(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A report (the `usage` command, GET /admin/usage: a 503 on sqlite3.Error) wrote the
    ledger's schema into an existing empty file: the ledger's writer makes it."""
    path = tmp_path / "gw.db"
    path.write_bytes(b"")
    with pytest.raises(sqlite3.OperationalError, match="no usage ledger yet"):
        read_usage(path, "key", 0.0, None)
    assert main(["usage", "--database", f"sqlite:///{path}"], {}) == 1
    assert "holds no usage ledger yet" in capsys.readouterr().err
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.db"]


def test_a_report_reads_the_ledger_a_writer_has_open_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = LedgerStore.open(path)
    ledger.write([_record(1, "key-x", None, 0.5)])
    try:
        before = path.stat().st_mtime_ns, (tmp_path / "gw.db-wal").stat().st_size
        [row] = read_usage(path, "key", 0.0, None)
        assert row["requests"] == 1
        assert (path.stat().st_mtime_ns, (tmp_path / "gw.db-wal").stat().st_size) == before
    finally:
        ledger.close()
    [row] = read_usage(path, "key", 0.0, None)  # and once it is closed (no -wal, no -shm)
    assert row["requests"] == 1

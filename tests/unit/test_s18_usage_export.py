"""A usage report is read by people, in spreadsheets and terminals, and holds names a
client chose: its model name (with a default endpoint any name reaches Azure and is
recorded). A CSV cell that starts like a formula is made text (OWASP's CSV injection),
and the table never prints a control character (store/usage_report.py)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.usage_report import as_csv, as_table, read_usage

HOSTILE = ["=1+2", "+SUM(A1)", "-2+3", "@SUM(A1)", "=WEBSERVICE(CHAR(104))"]


def _record(n: int, model: str, key: str | None = None) -> UsageRecord:
    return UsageRecord(time.time() - 60, f"req-{n}", key, None, model, "dep", "https://e/",
                       "chat/completions", 200, prompt_tokens=10, completion_tokens=5,
                       cost_usd=0.5, total_ms=3.0, usage_source="measured")


def _ledger(path: Path, records: list[UsageRecord]) -> None:
    ledger = LedgerStore.open(path)
    ledger.write(records)
    ledger.close()


def test_a_model_name_that_reads_as_a_formula_is_text_in_the_csv(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    _ledger(path, [_record(n, model) for n, model in enumerate([*HOSTILE, "gpt-4o"])])
    parsed = list(csv.reader(io.StringIO(as_csv("model", read_usage(path, "model", 0.0, None)))))
    models = {row[0] for row in parsed[1:]}
    assert models == {"'" + model for model in HOSTILE} | {"gpt-4o"}
    assert all(row[1] == "1" for row in parsed[1:])  # the numbers untouched


def test_a_key_named_like_a_formula_is_text_in_the_csv(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    keys = KeyStore.open(path)
    key, _ = keys.create_key("=HYPERLINK(1)", now=time.time())
    keys.close()
    _ledger(path, [_record(1, "gpt-4o", key.id)])
    parsed = list(csv.reader(io.StringIO(as_csv("key", read_usage(path, "key", 0.0, None)))))
    assert parsed[1][:2] == [key.id, "'=HYPERLINK(1)"]


def test_the_table_prints_no_control_character(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    _ledger(path, [_record(1, "gpt\u009b31mred"), _record(2, "x\u0085y")])
    table = as_table("model", read_usage(path, "model", 0.0, None))
    assert not any(0x7F <= ord(c) < 0xA0 or (ord(c) < 0x20 and c != "\n") for c in table)
    assert "gpt?31mred" in table and "x?y" in table

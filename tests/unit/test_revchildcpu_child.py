"""Review of the journal child's `JournalRecord` (branch childcpu): a record that prices
or writes into nothing is set aside as its own line (`request_record`, the one path that
turns a `JournalRecord` back into a line), a usage with no tokens but an image tool's part
is priced as a `RequestRecord`'s is, and the child's quiet collector is the child's alone
(a worker that reads a journal itself, after a take-over, keeps its own settings)."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections import deque
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.journalfiles import record_line, record_of_line
from azure_openai_proxy.gateway.ledgerrows import JournalRecord
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerStore
from tests.unit.test_childcpu_journal_record import _priced, child_writes

_MODELS = {("https://e/", "gpt-4o"): "gpt-4o", ("https://e/", "pictures"): "gpt-image-1"}
_TOOL = {"input_tokens": 20, "output_tokens": 1056, "total_tokens": 1076,
         "input_tokens_details": {"text_tokens": 12, "image_tokens": 8},
         "deployment": "pictures"}


def _record(request_id: str, usage: object) -> RequestRecord:
    return RequestRecord(request_id, "POST", route="chat/completions", model="gpt-4o",
                         deployment="gpt-4o", endpoint="https://e/", status=200, attempts=1,
                         upstream_ms=80.0, total_ms=90.0, usage=usage,  # type: ignore[arg-type]
                         key_id="key-1", team_id="team-a")


def _written(tmp_path: Path, records: list[RequestRecord]) -> tuple[list[str], bytes]:
    database = tmp_path / "gateway.db"
    child_writes(database, _MODELS, records,
                 [1_796_212_800.0 + n for n in range(len(records))])
    store = LedgerStore.open(database)
    try:
        ids = sorted(r.request_id for r in store.records())
    finally:
        store.close()
    refused = database.with_name(database.name + ".journal-refused.jsonl")
    return ids, refused.read_bytes() if refused.exists() else b""


def test_a_record_that_prices_into_nothing_is_set_aside_as_its_line(tmp_path: Path) -> None:
    good = {"prompt_tokens": 5, "completion_tokens": 5}
    bad = _record("req-bad", [1, 2])  # valid JSON, no mapping: the pricer's AttributeError
    ids, refused = _written(tmp_path, [_record("req-1", good), bad, _record("req-2", good)])
    assert ids == ["req-1", "req-2"]
    assert refused == record_line(bad, 1_796_212_801.0) + b"\n"


def test_no_tokens_but_an_image_tool_prices_as_a_request_records_does() -> None:
    """Chat's shape with both details objects and no tokens: `record_cost` prices it, and
    its image tool's part needs a `RequestRecord` (`_without_tool`)."""
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}, "image_gen": _TOOL}
    line = record_line(_record("req-tool", usage), 1_796_212_800.0)
    as_before = _priced(deque([record_of_line(orjson.loads(line))]))
    record = JournalRecord.of_values(orjson.loads(line))
    rows = _priced(deque([(record, float(record.ended))]))
    assert rows == as_before and rows[0][8] > 0


_GC_PROBE = """
import gc, sys
from azure_openai_proxy.gateway import journalchild
journalchild.run = lambda *args: print(gc.get_threshold()[0], gc.get_freeze_count() > 0) or 0
sys.exit(journalchild.main(["p", "d", "1000", "9"]))
"""


def test_the_child_quiets_its_collector_and_a_reader_in_a_worker_does_not(
        tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", _GC_PROBE], capture_output=True, text=True,
                           timeout=60, check=True)
    assert child.stdout.split() == ["50000", "True"]
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    _written(tmp_path, [_record("req-1", {"prompt_tokens": 5, "completion_tokens": 5})])
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)


def test_the_bench_writes_its_journal_through_the_child_code() -> None:
    """bench/journalchild.py's run, in its own process (it quiets the collector as the
    child's main does): the warm-up's 4,000 records and the measured ones in the ledger."""
    root = Path(__file__).resolve().parents[2]
    for phase, written in (("priced", 4000), ("full", 4150)):
        run = subprocess.run([sys.executable, "-m", "bench.journalchild", "--records", "150",
                              "--keys", "7", "--phase", phase], cwd=root, capture_output=True,
                             text=True, timeout=120, check=True)
        assert run.stdout.split() == ["phase", f"{phase}:", str(written), "records", "in",
                                      "the", "ledger"]

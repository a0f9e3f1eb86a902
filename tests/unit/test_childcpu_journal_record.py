"""The journal child reads a record line as a `JournalRecord` (a NamedTuple of the line's
values) instead of `record_of_line`'s `RequestRecord`: every shape of record prices into
the same row either way, and the child writes the same records and rollups."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import orjson
import pytest

from azure_openai_proxy.gateway.journalchild import DONE, JournalReader, Ledger
from azure_openai_proxy.gateway.journalfiles import (
    prices_line,
    record_line,
    record_of_line,
    segment_path,
)
from azure_openai_proxy.gateway.ledgerrows import JournalRecord, Queued, RowPricer, usage_record
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerRow, LedgerStore

_MODELS = {("https://e/", "gpt-4o"): "gpt-4o", ("https://e/", "pictures"): "gpt-image-1",
           ("https://e/", "dall-e-3"): "dall-e-3", ("https://e/", "tts"): "gpt-4o-mini-tts"}
_DETAILS = {"prompt_tokens_details": {"cached_tokens": 7, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3}}
_TOOL = {"input_tokens": 20, "output_tokens": 1056, "total_tokens": 1076,
         "input_tokens_details": {"text_tokens": 12, "image_tokens": 8},
         "deployment": "pictures"}
# (route, deployment, status, usage): each path of `RowPricer.take`
_SHAPES: list[tuple[str, str, int, dict[str, Any] | None]] = [
    ("chat/completions", "gpt-4o", 200, {"prompt_tokens": 61, "completion_tokens": 33}),
    ("chat/completions", "gpt-4o", 200,
     {"prompt_tokens": 61, "completion_tokens": 33, "total_tokens": 94}),
    ("chat/completions", "gpt-4o", 200,
     {"prompt_tokens": 61, "completion_tokens": 33, "total_tokens": 94, **_DETAILS}),
    ("chat/completions", "gpt-4o", 200,
     {"prompt_tokens": 61, "completion_tokens": 12, "estimated": True}),
    ("chat/completions", "gpt-4o", 499, None),
    ("responses", "gpt-4o", 200,
     {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40,
      "input_tokens_details": {"cached_tokens": 0},
      "output_tokens_details": {"reasoning_tokens": 0}}),
    ("responses", "gpt-4o", 200,
     {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40, "image_gen": _TOOL}),
    ("chat/completions", "gpt-4o", 200,
     {"prompt_tokens": 30, "completion_tokens": 10, "estimated": True, "image_gen": _TOOL}),
    ("images/generations", "dall-e-3", 200, {"images": 1, "size": "1024x1024",
                                             "quality": "standard"}),
    ("images/generations", "dall-e-3", 0, {"estimated_usd": 0.04}),
    ("audio/speech", "tts", 200, {"characters": 120, "estimated_tokens": {
        "prompt_tokens": 30, "completion_tokens": 900}}),
    ("chat/completions", "unknown-deployment", 200, {"prompt_tokens": 5,
                                                     "completion_tokens": 5}),
]


def _records() -> list[RequestRecord]:
    return [RequestRecord(f"req-{n}", "POST", route=route, model=deployment,
                          deployment=deployment, endpoint="https://e/", status=status,
                          attempts=1 + n % 2, upstream_ms=None if n % 3 == 0 else 80.0 + n,
                          total_ms=90.0 + n, usage=usage, stream=n % 2 == 1,
                          key_id=f"key-{n % 3}" if n % 4 else None,
                          team_id="team-a" if n % 2 else None)
            for n, (route, deployment, status, usage) in enumerate(_SHAPES)]


def _priced(queue: deque[Queued]) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    RowPricer(PriceTable.shipped(), _MODELS).take(queue, len(queue), rows,
                                                  (-1e308, -1e308, ""), lambda labels: 7)
    return rows


def test_every_shape_prices_into_the_same_row_as_from_a_request_record() -> None:
    lines = [record_line(record, 1_796_212_800.0 + n) for n, record in enumerate(_records())]
    as_before = _priced(deque(record_of_line(orjson.loads(line)) for line in lines))
    as_the_child = deque[Queued]()
    for line in lines:
        record = JournalRecord.of_values(orjson.loads(line))
        as_the_child.append((record, float(record.ended)))
    rows = _priced(as_the_child)
    assert rows == as_before
    assert len(rows) == len(_SHAPES) and any(row[8] for row in rows)


def test_a_line_of_another_length_is_no_journal_record() -> None:
    values = orjson.loads(record_line(_records()[0], 1.0))
    with pytest.raises(TypeError):
        JournalRecord.of_values(values[:-1])
    with pytest.raises(TypeError):
        JournalRecord.of_values([*values, None])


def child_writes(database: Path, models: dict[tuple[str, str], str],
                 records: list[RequestRecord], ended: list[float]) -> None:
    """A new `database` given a journal of `records` (the shipped prices, `models`) by
    the child's reader, as it writes a stopped worker's."""
    LedgerStore.open(database).close()
    prefix = str(database) + ".journal-test"
    lines = [prices_line(PriceTable.shipped(), models),
             *(record_line(r, t) for r, t in zip(records, ended, strict=True))]
    segment_path(prefix, 1).write_bytes(b"\n".join(lines) + b"\n")
    ledger = Ledger(database, 1000)
    reader = JournalReader(prefix, ledger)
    while reader.step(finished=True) != DONE:
        pass
    ledger.close()


def test_the_child_writes_what_the_request_records_price_to(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    records = _records()
    ended = [1_796_212_800.0 + n for n in range(len(records))]
    child_writes(database, _MODELS, records, ended)
    store = LedgerStore.open(database)
    try:
        written = sorted(store.records(), key=lambda r: r.request_id)
        expected = sorted((usage_record(r, t - r.total_ms / 1000, PriceTable.shipped(), _MODELS)
                           for r, t in zip(records, ended, strict=True)),
                          key=lambda r: r.request_id)
        assert written == expected
        spent = {row["model"]: row["cost_usd"] for row in store.usage("model", 0, 2e9)}
        assert spent["gpt-4o"] > 0
    finally:
        store.close()

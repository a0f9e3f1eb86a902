"""The journal child's cost per record, alone (a tool, not a test).

Run: python -m bench.journalchild [--records 100000] [--keys 100] [--phase full]

A journal is written as the worker writes it (gateway/journalfiles.py's lines: a prices
line at each segment's head, then one record line a request; segments of 16 MiB), of
records shaped like a governed gateway's: `--keys` virtual keys in turn, four models
(a quarter each of gpt-4o, gpt-4o-mini, o3-mini and gpt-35-turbo), one request in four
streamed, Azure's usage with its details objects, the gateway's request ids. Then the
child's own code (`JournalReader.step` with a `Ledger`, as `journalchild.run` calls them
when its worker has stopped) writes it to a fresh database, first a warm-up journal of
4,000 records (opening the database, its labels, the statements' preparation: once in a
child's life), then the measured one. `--phase` stops early, to split the cost by
difference (instructions counted by callgrind over the whole run, `--phase none` the
base):

    none      the journal written, nothing read
    lines     + the segments read, split, each line parsed (`JournalRecord.of_values`)
    priced    + the records priced into rows (`RowPricer.take`)
    full      + written to SQLite, acknowledged, the segments removed (the child's work)

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.%p \\
        python -m bench.journalchild --phase full

(`--count [PHASE ...]` runs each phase so, twice, and prints instructions a record.)
"""

from __future__ import annotations

import argparse
import tempfile
from collections import deque
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.journalchild import DONE, JournalReader, Ledger, quiet_collector
from azure_openai_proxy.gateway.journalfiles import (
    prices_line,
    record_line,
    segment_path,
)
from azure_openai_proxy.gateway.ledgerrows import JournalRecord, Queued, RowPricer
from azure_openai_proxy.gateway.requestids import request_id_source
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import FULL_BATCH, Labels, LedgerRow, LedgerStore

PHASES = ("none", "lines", "priced", "full")
_ENDPOINT = "https://example-east.openai.azure.com/"
_MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-35-turbo")
_SEGMENT_BYTES = 16 << 20  # the worker's (ledgerjournal.py)
_START = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC: the records span no midnight
_RATE = 3000.0  # records a second: their `ended` times


def _record(request_id: str, n: int, keys: int) -> RequestRecord:
    prompt, completion = 40 + n % 900, 10 + n % 400
    usage = {"completion_tokens": completion, "prompt_tokens": prompt,
             "total_tokens": prompt + completion,
             "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0,
                                           "reasoning_tokens": 0,
                                           "rejected_prediction_tokens": 0},
             "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0}}
    model = _MODELS[n // keys % len(_MODELS)]
    return RequestRecord(request_id, "POST", route="chat/completions", model=model,
                         deployment=model, endpoint=_ENDPOINT, status=200, attempts=1,
                         upstream_ms=80.0 + n % 50, total_ms=81.5 + n % 50, usage=usage,
                         stream=n % 4 == 0, key_id=f"key-{n % keys:04d}",
                         team_id=f"team-{n % keys % 10}")


def write_journal(prefix: str, first: int, count: int, keys: int,
                  next_id: object) -> None:
    """`count` records' lines in segments of the worker's size, each headed by prices."""
    prices = prices_line(PriceTable.shipped(), {(_ENDPOINT, m): m for m in _MODELS})
    make_id = next_id if callable(next_id) else request_id_source()
    number, size, lines = 1, 0, [prices]
    for n in range(first, first + count):
        line = record_line(_record(make_id(), n, keys), _START + n / _RATE)
        lines.append(line)
        size += len(line) + 1
        if size >= _SEGMENT_BYTES:
            segment_path(prefix, number).write_bytes(b"\n".join(lines) + b"\n")
            number, size, lines = number + 1, 0, [prices]
    segment_path(prefix, number).write_bytes(b"\n".join(lines) + b"\n")


def _segments(prefix: str) -> list[bytes]:
    found, number = [], 1
    while segment_path(prefix, number).is_file():
        found.append(segment_path(prefix, number).read_bytes())
        number += 1
    return found


def read_lines(prefix: str) -> deque[Queued]:
    """Phase `lines`: the records as the child parses them (the prices lines skipped)."""
    records: deque[Queued] = deque()
    make = JournalRecord.of_values
    for data in _segments(prefix):
        for line in data.split(b"\n")[:-1]:
            if line.startswith(b"["):
                record = make(orjson.loads(line))
                records.append((record, float(record.ended)))
    return records


def price(records: deque[Queued]) -> list[LedgerRow]:
    """Phase `priced`: the rows, priced in the child's batches (each combination's label
    id known, as the child's store gives it: the pricer remembers it)."""
    pricer = RowPricer(PriceTable.shipped(), {(_ENDPOINT, m): m for m in _MODELS})
    rows: list[LedgerRow] = []
    days = -1e308, -1e308, ""
    ids: dict[Labels, int] = {}
    while records:
        days, _ = pricer.take(records, FULL_BATCH, rows, days,
                              lambda labels: ids.setdefault(labels, len(ids) + 1))
    return rows


def write_all(prefix: str, ledger: Ledger) -> None:
    """Phase `full`: the child's own loop over a stopped worker's journal."""
    reader = JournalReader(prefix, ledger)
    while reader.step(finished=True) != DONE:
        pass
    reader.remove()


def run(records: int, keys: int, phase: str, directory: Path) -> int:
    quiet_collector()  # as the child's `main`
    database = directory / "gateway.db"
    LedgerStore.open(database).close()  # the worker makes it at its start
    make_id = request_id_source()
    warm, measured = str(database) + ".journal-warm", str(database) + ".journal-bench"
    write_journal(warm, 0, 4000, keys, make_id)
    write_journal(measured, 4000, records, keys, make_id)
    ledger = Ledger(database, 5000)
    write_all(warm, ledger)
    if phase == "lines":
        read_lines(measured)
    elif phase == "priced":
        price(read_lines(measured))
    elif phase == "full":
        write_all(measured, ledger)
    ledger.close()
    store = LedgerStore.open(database)
    try:
        return store.count()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--phase", choices=PHASES, default="full")
    parser.add_argument("--count", nargs="*", choices=PHASES, metavar="PHASE",
                        help="these phases (all if none named) under callgrind, twice each, "
                             "and `none`: instructions a record")
    args = parser.parse_args(argv)
    if args.count is not None:
        count(args.records, args.keys, args.count or list(PHASES))
        return
    with tempfile.TemporaryDirectory() as tmp:
        written = run(args.records, args.keys, args.phase, Path(tmp))
    print(f"phase {args.phase}: {written} records in the ledger")


def count(records: int, keys: int, phases: list[str]) -> None:
    from bench.callgrind import module_total

    phases = [phase for phase in PHASES if phase == "none" or phase in phases]
    totals = {phase: [module_total("bench.journalchild", "--records", str(records),
                                   "--keys", str(keys), "--phase", phase) for _ in range(2)]
              for phase in phases}
    base = min(totals["none"])
    previous = base
    for phase in phases:
        low = min(totals[phase])
        print(f"{phase:7} {' / '.join(f'{t:,}' for t in totals[phase])}  "
              f"{(low - base) / records:10,.0f} a record  "
              f"(this step {(low - previous) / records:8,.0f})")
        previous = low


if __name__ == "__main__":
    main()

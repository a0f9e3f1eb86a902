"""The ledger journal's files and lines, shared by the worker that writes them
(`ledgerjournal.py`) and the child process that writes them to the database
(`journalchild.py`).

One worker's journal is a set of files named from a prefix, `<database>.journal-<id>`
(`<id>`: the worker's pid and a random part, so a pid used again never meets an old
journal):

    <prefix>.lock        flock'd by the worker and its child for as long as either
                         lives: one that can be locked is a dead worker's (claimed)
    <prefix>.000001 ...  segments of lines, appended by the worker; each begins with a
                         prices line; a new one once the last passes its size bound
    <prefix>.ack         "<segment> <offset>": what the child has committed to the
                         database (replaced atomically after each batch)

A line is a finished request's record, a JSON array (`record_line`: ids, names,
status, times, the usage's counts; never a prompt, an answer or a key's secret), or
the prices of the records after it, a JSON object (`prices_line`: a reload's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.governance.prices import Price, PriceTable
from azure_openai_proxy.observability.record import RequestRecord

__all__ = [
    "Position",
    "dead_journals",
    "drop_oldest",
    "journal_size",
    "prices_line",
    "prices_of_line",
    "read_ack",
    "record_line",
    "record_of_line",
    "remove_journal",
    "segment_path",
    "segments",
    "write_ack",
]

# (segment number, byte offset in it): what the child acknowledged, or where the
# worker's last write ended. Segments are numbered from 1: (0, 0) is nothing yet.
Position = tuple[int, int]


def segment_path(prefix: str, number: int) -> Path:
    return Path(f"{prefix}.{number:06d}")


def segments(prefix: str) -> list[int]:
    """The numbers of the journal's segments on disk, in order."""
    path = Path(prefix)
    numbers = []
    for entry in path.parent.glob(path.name + ".*"):
        tail = entry.name[len(path.name) + 1:]
        if len(tail) == 6 and tail.isdigit():
            numbers.append(int(tail))
    return sorted(numbers)


def journal_size(prefix: str) -> int:
    """The bytes of the journal's segments on disk."""
    total = 0
    for number in segments(prefix):
        with contextlib.suppress(OSError):
            total += segment_path(prefix, number).stat().st_size
    return total


def dead_journals(database: Path, own: str) -> list[str]:
    """The prefixes of the other journals of `database` (their lock files); which are
    a dead worker's is for flock to say."""
    found = []
    for lock in database.parent.glob(database.name + ".journal-*.lock"):
        prefix = str(lock)[:-len(".lock")]
        if prefix != own:
            found.append(prefix)
    return sorted(found)


def read_ack(prefix: str) -> Position:
    try:
        text = Path(prefix + ".ack").read_text()
        number, offset = text.split()
        return int(number), int(offset)
    except (OSError, ValueError):
        return 0, 0


def write_ack(prefix: str, position: Position) -> None:
    """Atomically: a crash leaves the old acknowledgement or the new, never half of one
    (a batch acknowledged late is written again: INSERT OR IGNORE counts it once)."""
    temporary = prefix + ".ack.tmp"
    with open(temporary, "w") as file:
        file.write(f"{position[0]} {position[1]}")
    os.replace(temporary, prefix + ".ack")


def drop_oldest(lines: deque[bytes], count: int) -> list[str]:
    """The `count` oldest `lines` gone (past the journal's bound): the ids of the records
    among them. The last prices line among them stays: the records after it keep them."""
    pop = lines.popleft
    ids: list[str] = []
    prices = None
    for _ in range(count):
        line = pop()
        if line.startswith(b"["):
            ids.append(orjson.loads(line)[0])
        else:
            prices = line
    if prices is not None:
        lines.appendleft(prices)
    return ids


def remove_journal(prefix: str) -> None:
    """The journal's files, gone (by its writer, under its lock)."""
    for number in segments(prefix):
        with contextlib.suppress(OSError):
            segment_path(prefix, number).unlink()
    for tail in (".ack", ".ack.tmp", ".lock", ".lock.new"):
        with contextlib.suppress(OSError):
            os.unlink(prefix + tail)


# -- lines -------------------------------------------------------------------------------


def record_line(record: RequestRecord, ended: float) -> bytes:
    """The journal line of a finished request that ended at `ended` (what the pricer
    reads: `RowPricer.take`). The event loop's own copy is `LedgerJournal.add`'s, inline."""
    return orjson.dumps((record.request_id, ended, record.total_ms, record.upstream_ms,
                         record.status, record.attempts, record.stream, record.key_id,
                         record.team_id, record.model, record.deployment, record.endpoint,
                         record.route, record.usage))


def record_of_line(values: list[Any]) -> tuple[RequestRecord, float]:
    """A record line's request, as the pricer reads it, and when it ended."""
    (request_id, ended, total, upstream, status, attempts, stream, key_id, team_id, model,
     deployment, endpoint, route, usage) = values
    return RequestRecord(request_id, "", route=route, model=model, deployment=deployment,
                         endpoint=endpoint, status=status, attempts=attempts,
                         upstream_ms=upstream, total_ms=total, usage=usage, stream=stream,
                         key_id=key_id, team_id=team_id), float(ended)


def prices_line(prices: PriceTable, models: Mapping[tuple[str, str], str]) -> bytes:
    return orjson.dumps({
        "prices": {name: dataclasses.asdict(price) for name, price in prices.entries()},
        "models": [[endpoint, deployment, model]
                   for (endpoint, deployment), model in models.items()]})


def prices_of_line(values: dict[str, Any]) -> tuple[PriceTable, dict[tuple[str, str], str]]:
    prices = PriceTable({name: Price(**fields) for name, fields in values["prices"].items()})
    models = {(endpoint, deployment): model for endpoint, deployment, model in values["models"]}
    return prices, models

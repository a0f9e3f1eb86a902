"""Usage queries as people read them: a time range from `7d`/`24h`/a date, a key's or
team's name beside its id, and the rows as a table, CSV or JSON. Shared by
`azure-openai-proxy usage` and GET /admin/usage."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from azure_openai_proxy.governance.keys import printable
from azure_openai_proxy.store.ledger import Grouping, LedgerStore, UsageRow
from azure_openai_proxy.store.sqlite import connect

__all__ = ["COLUMNS", "as_csv", "as_json", "as_table", "parse_time", "read_usage"]

COLUMNS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens",
           "reasoning_tokens", "cost_usd", "estimated", "unpriced")
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Groupings by an id that has a name, and the table it is in (store/keys.py).
_NAMED: dict[str, str] = {"key": "keys", "team": "teams"}


def read_usage(path: Path, by: Grouping, since: float, until: float | None) -> list[UsageRow]:
    """The ledger's totals grouped `by`; by key or team, each row's `name` beside its id
    (None: a static key, or a key or team since deleted). A database that is not there
    is a sqlite3.Error: a report never makes one (store/sqlite.py `connect`)."""
    store = LedgerStore.open(path, create=False)
    try:
        rows = store.usage(by, since, until)
    finally:
        store.close()
    table = _NAMED.get(by)
    if table is None or not rows:
        return rows
    names = _names(path, table)
    return [{by: row[by], "name": names.get(row[by]),
             **{k: v for k, v in row.items() if k != by}} for row in rows]


def _names(path: Path, table: str) -> dict[str, str]:
    """id -> name of every key or team (none when the database holds no keys table)."""
    db = connect(path, create=False)
    try:
        return {str(i): str(n) for i, n in db.execute(f"SELECT id, name FROM {table}")}
    except sqlite3.OperationalError:  # a ledger written without governance's tables
        return {}
    finally:
        db.close()


def parse_time(text: str, now: float) -> float:
    """`7d`, `24h`, `30m` (that long before `now`), an ISO date or date-time (UTC unless
    it says), or epoch seconds: a finite number (`nan` and `inf` would be echoed into the
    JSON answer as `NaN`/`Infinity`, which no JSON parser reads). A ValueError names
    what is accepted."""
    text = text.strip()
    try:
        moment = _moment(text, now)
    except (OverflowError, ValueError):  # 10**400 days; an int past 4,300 digits
        moment = math.nan
    if not math.isfinite(moment):
        raise ValueError(f"{text[:40]!r} is not a time: use 7d, 24h, 30m, 2026-12-01 or "
                         "2026-12-01T08:00:00")
    return moment


def _moment(text: str, now: float) -> float:
    match = _RELATIVE.match(text)
    if match:
        return now - int(match.group(1)) * _UNIT[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _header(by: Grouping) -> list[str]:
    return [by, "name", *COLUMNS] if by in _NAMED else [by, *COLUMNS]


# A client's model name may hold C1 control characters (check_model_name refuses C0's
# and DEL only, the URL breakers), and a terminal obeys some of them (U+009B starts an
# escape sequence): the table shows '?' in their place (`printable`).


def _cells(by: Grouping, row: UsageRow) -> list[str]:
    cells = ["-" if row[by] is None else printable(str(row[by]))]
    if by in _NAMED:
        cells.append(printable(row.get("name") or "-"))
    for column in COLUMNS:
        value = row[column]
        cells.append(f"{value:.6f}" if column == "cost_usd" else str(value or 0))
    return cells


def as_table(by: Grouping, rows: Sequence[UsageRow]) -> str:
    lines = [_header(by)] + [_cells(by, row) for row in rows]
    total = ["total", *([""] if by in _NAMED else [])] + [
        f"{sum(r[c] or 0 for r in rows):.6f}" if c == "cost_usd" else str(sum(r[c] or 0 for r in rows))
        for c in COLUMNS]
    lines.append(total)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    left = 2 if by in _NAMED else 1  # the id and the name are text, the rest numbers
    out = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.insert(len(out) - 1, out[1])
    return "\n".join(out)


# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula
# (OWASP's "CSV injection"). A client chooses its model name (any name reaches Azure with
# a default endpoint, and is recorded), so a text cell starting so is prefixed with "'",
# which spreadsheets show as text and do not display.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: object) -> object:
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def as_csv(by: Grouping, rows: Sequence[UsageRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_header(by))
    for row in rows:
        named = [_inert(row.get("name"))] if by in _NAMED else []
        writer.writerow([_inert(row[by]), *named, *(row[c] for c in COLUMNS)])
    return buffer.getvalue()


def as_json(by: Grouping, rows: Sequence[UsageRow], since: float, until: float | None) -> str:
    return json.dumps({"by": by, "since": since, "until": until, "data": list(rows)})

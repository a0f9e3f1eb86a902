"""`azure-openai-proxy usage --by key|team|model|deployment|day --since 7d [--until T]
[--csv|--json]`: who spent what, read from the ledger's database (the server running or
not: SQLite's WAL lets a reader beside the writer)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.store.ledger import GROUPINGS
from azure_openai_proxy.store.sqlite import database_path, sqlite_path
from azure_openai_proxy.store.usage_report import (
    as_csv,
    as_json,
    as_table,
    parse_time,
    read_usage,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azure-openai-proxy usage",
        description="Usage and cost from the ledger, grouped (a table; --csv or --json).")
    parser.add_argument("-c", "--configFile", "--config", dest="config", metavar="FILE",
                        help="the server's config file (for `database`)")
    parser.add_argument("--database", metavar="URL", help="sqlite:///path/gateway.db")
    parser.add_argument("--by", choices=GROUPINGS, default="key")
    parser.add_argument("--since", default="7d", help="7d, 24h, 30m, or a date (UTC)")
    parser.add_argument("--until", default=None, help="same forms; default: now")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true")
    output.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str], config_path: str | None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = sqlite_path(args.database) if args.database else database_path(
            load_settings(args.config or config_path, environ, {}), operator=True)
        now = time.time()
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else None
        missing = not path.exists()  # an OSError in a directory closed to this user
    except (ConfigError, ValueError, OSError) as exc:
        print(f"azure-openai-proxy usage: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(f"azure-openai-proxy usage: no ledger at {path} (is `database` set?)",
              file=sys.stderr)
        return 1
    try:
        rows = read_usage(path, args.by, since, until)
    except sqlite3.Error as exc:
        print(f"azure-openai-proxy usage: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if args.csv:
        sys.stdout.write(as_csv(args.by, rows))
    elif args.json:
        print(as_json(args.by, rows, since, until))
    else:
        print(as_table(args.by, rows))
    return 0

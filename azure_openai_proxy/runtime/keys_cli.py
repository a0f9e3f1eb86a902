"""`azure-openai-proxy keys ...` and `teams ...`: virtual keys and teams in the gateway's
database, with the server running or not (SQLite in WAL mode: the CLI's writes reach a
running gateway through the store's change counter within a second).

The database is `--database URL`, else AZURE_OPENAI_PROXY_DATABASE, else `database:` in
the config file (`-c`, or ./config.yaml), else the default place (store/sqlite.py).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.config import ConfigError, load_settings
from azure_openai_proxy.governance.keys import (
    check_grace,
    expiry_note,
    key_state,
    key_view,
    parse_duration,
    parse_expiry,
    parse_limits,
    parse_models,
    parse_name,
    printable,
    team_view,
)
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.store.keys import KeyStore, StoreConflict, StoreNotFound
from azure_openai_proxy.store.sqlite import database_path, sqlite_path

__all__ = ["main"]

_READS = ("list", "show")  # they open the database read-only, and write nothing


def main(command: str, argv: Sequence[str], environ: Mapping[str, str],
         config_path: str | None) -> int:
    """`config_path`: the config file the server would read (`cli._config_path`), used
    when neither `--database` nor `-c` is given."""
    parser = _keys_parser() if command == "keys" else _teams_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "action", None):
        parser.print_help()
        return 2
    try:  # (exists(): a directory closed to this user, the gateway's 0750, is an OSError)
        path = _database(args, environ, config_path)
        missing = args.action != "create" and not path.exists()
    except (ConfigError, ValueError, OSError) as exc:
        print(f"azure-openai-proxy {command}: {exc}", file=sys.stderr)
        return 2
    if missing:
        # A reading of a mistyped path made an empty database there and listed no keys,
        # as if they were all gone (`usage` says so too); an update, rotate, revoke or
        # delete made one too, to answer "no key" (only a create can use a new one).
        print(f"azure-openai-proxy {command}: no database at {path} (is `database` set?)",
              file=sys.stderr)
        return 1
    try:  # a directory, a file that is not a database, one locked past the busy timeout
        # (a reading writes nothing: an operator who may only read the database lists it)
        store = KeyStore.reader(path) if args.action in _READS else KeyStore.open(path)
    except (sqlite3.Error, OSError) as exc:
        print(f"azure-openai-proxy {command}: cannot open {path}: {exc}", file=sys.stderr)
        return 2
    try:
        handler: Callable[[KeyStore, argparse.Namespace], Any] = args.handler
        return int(handler(store, args) or 0)
    except (StoreNotFound, StoreConflict) as exc:
        print(f"azure-openai-proxy {command}: {exc.args[0]}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"azure-openai-proxy {command}: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"azure-openai-proxy {command}: the database {path} failed: {exc}",
              file=sys.stderr)
        return 1
    finally:
        store.close()


def _database(args: argparse.Namespace, environ: Mapping[str, str],
              config_path: str | None) -> Path:
    if args.database:
        return sqlite_path(args.database)
    settings = load_settings(args.config or config_path, environ, {})
    return database_path(settings, operator=True)


# -- parsers --------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--configFile", "--config", dest="config", metavar="FILE",
                        help="config file whose `database:` to use")
    parser.add_argument("--database", metavar="URL", help="sqlite:///path/gateway.db")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--parallel", type=int, dest="max_parallel", help="requests in flight")
    parser.add_argument("--budget", type=float, dest="budget_usd", metavar="USD")
    parser.add_argument("--budget-period", choices=("daily", "weekly", "monthly", "none"))
    parser.add_argument("--soft-budget", type=float, dest="soft_budget_usd", metavar="USD")
    parser.add_argument("--metadata", metavar="JSON", help="a JSON object")


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azure-openai-proxy keys",
                                     description="Virtual keys: create, list, show, update, "
                                                 "rotate, revoke.")
    sub = parser.add_subparsers(dest="action")
    create = sub.add_parser("create", help="a new key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--team", help="the team's id or name")
    create.add_argument("--models", help="allowed models: names or patterns, comma-separated "
                                         "(none or '*': every model)")
    create.add_argument("--expires", help="30d, 12h, an ISO 8601 time, or never")
    _limit_flags(create)
    create.set_defaults(handler=_create_key)
    update = sub.add_parser("update", help="change a key's name, team, models, limits, expiry")
    update.add_argument("key", help="the key's id or name")
    update.add_argument("--name")
    update.add_argument("--team", help="a team's id or name ('none': no team)")
    update.add_argument("--models", help="comma-separated ('' or '*': every model)")
    update.add_argument("--expires", help="30d, 12h, an ISO 8601 time, or never")
    update.add_argument("--block", action="store_true", default=None, dest="blocked")
    update.add_argument("--unblock", action="store_false", dest="blocked")
    _limit_flags(update)
    update.set_defaults(handler=_update_key)
    rotate = sub.add_parser("rotate", help="a new secret; the old one works --grace longer")
    rotate.add_argument("key")
    rotate.add_argument("--grace", default="0", help="how long the old secret still works "
                                                     "(90s, 45m, 24h; default 0)")
    rotate.set_defaults(handler=_rotate_key)
    revoke = sub.add_parser("revoke", help="delete a key: it stops working within a second")
    revoke.add_argument("key")
    revoke.set_defaults(handler=_revoke_key)
    listing = sub.add_parser("list", help="every key (never a secret)")
    listing.set_defaults(handler=_list_keys)
    show = sub.add_parser("show", help="one key")
    show.add_argument("key")
    show.set_defaults(handler=_show_key)
    for command in (create, update, rotate, revoke, listing, show):
        _common(command)
    return parser


def _teams_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azure-openai-proxy teams",
                                     description="Teams: limits their keys share.")
    sub = parser.add_subparsers(dest="action")
    create = sub.add_parser("create")
    create.add_argument("--name", required=True)
    _limit_flags(create)
    create.set_defaults(handler=_create_team)
    update = sub.add_parser("update")
    update.add_argument("team")
    update.add_argument("--name")
    update.add_argument("--block", action="store_true", default=None, dest="blocked")
    update.add_argument("--unblock", action="store_false", dest="blocked")
    _limit_flags(update)
    update.set_defaults(handler=_update_team)
    delete = sub.add_parser("delete", help="a team without keys")
    delete.add_argument("team")
    delete.set_defaults(handler=_delete_team)
    listing = sub.add_parser("list")
    listing.set_defaults(handler=_list_teams)
    show = sub.add_parser("show")
    show.add_argument("team")
    show.set_defaults(handler=_show_team)
    for command in (create, update, delete, listing, show):
        _common(command)
    return parser


# -- keys -----------------------------------------------------------------------------


def _create_key(store: KeyStore, args: argparse.Namespace) -> int:
    now = time.time()
    key, secret = store.create_key(
        parse_name(args.name), team=args.team, models=parse_models(args.models or None),
        limits=Limits(**_limits(args)), now=now,
        expires_at=parse_expiry(args.expires, now, creating=True) if args.expires else None,
        metadata=_metadata(args.metadata),
    )
    return _secret_out(args, key, secret, store)


def _update_key(store: KeyStore, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = parse_name(args.name)
    if args.team is not None:
        changes["team_id"] = None if args.team.lower() == "none" else args.team
    if args.models is not None:
        changes["models"] = parse_models(args.models)  # "" or "*": every model
    if args.expires is not None:
        changes["expires_at"] = parse_expiry(args.expires, time.time())
    if args.blocked is not None:
        changes["blocked"] = args.blocked
    if args.metadata is not None:
        changes["metadata"] = _metadata(args.metadata)
    limits = _limits(args)
    if limits:
        changes["limits"] = limits
    key = store.update_key(args.key, changes)
    if note := expiry_note(changes.get("expires_at"), time.time()):  # expired now
        print(f"azure-openai-proxy keys: {note}", file=sys.stderr)
    return _keys_out(args, [key], store)


def _rotate_key(store: KeyStore, args: argparse.Namespace) -> int:
    key, secret = store.rotate_key(args.key, grace_seconds=check_grace(parse_duration(args.grace)),
                                   now=time.time())
    return _secret_out(args, key, secret, store)


def _revoke_key(store: KeyStore, args: argparse.Namespace) -> int:
    key = store.delete_key(args.key)
    return _deleted_out(args, "revoked", key.id, key.name)


def _list_keys(store: KeyStore, args: argparse.Namespace) -> int:
    return _keys_out(args, store.list_keys(), store)


def _show_key(store: KeyStore, args: argparse.Namespace) -> int:
    return _keys_out(args, [store.key(args.key)], store)


def _secret_out(args: argparse.Namespace, key: VirtualKey, secret: str, store: KeyStore) -> int:
    if args.json:
        print(json.dumps({**key_view(key), "key": secret}))
        return 0
    _keys_out(args, [key], store)
    print(f"\nkey: {secret}\n(shown once: only its hash is kept)")
    return 0


def _keys_out(args: argparse.Namespace, keys: list[VirtualKey], store: KeyStore) -> int:
    if args.json:
        views = [key_view(k) for k in keys]
        print(json.dumps(views if args.action == "list" else views[0]))
        return 0
    teams = {team.id: team for team in store.list_teams()}
    now = time.time()
    rows = [("ID", "NAME", "PREFIX", "TEAM", "MODELS", "RPM", "TPM", "PARALLEL", "EXPIRES",
             "STATE")]
    for key in keys:
        team = teams.get(key.team_id) if key.team_id else None
        view = key_view(key)
        rows.append((key.id, key.name, key.prefix + "...", team.name if team else "-",
                     ",".join(key.models) or "*", *_limit_cells(key.limits),
                     view["expires_at"] or "never", key_state(key, team, now)))
    _table(rows)
    return 0


# -- teams ----------------------------------------------------------------------------


def _create_team(store: KeyStore, args: argparse.Namespace) -> int:
    team = store.create_team(parse_name(args.name), limits=Limits(**_limits(args)),
                             metadata=_metadata(args.metadata), now=time.time())
    return _teams_out(args, [team], store)


def _update_team(store: KeyStore, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = parse_name(args.name)
    if args.blocked is not None:
        changes["blocked"] = args.blocked
    if args.metadata is not None:
        changes["metadata"] = _metadata(args.metadata)
    limits = _limits(args)
    if limits:
        changes["limits"] = limits
    return _teams_out(args, [store.update_team(args.team, changes)], store)


def _delete_team(store: KeyStore, args: argparse.Namespace) -> int:
    team = store.delete_team(args.team)
    return _deleted_out(args, "deleted", team.id, team.name)


def _deleted_out(args: argparse.Namespace, verb: str, id_: str, name: str) -> int:
    if args.json:
        print(json.dumps({"id": id_, "deleted": True}))
    else:
        print(f"{verb} {id_} ({printable(name)})")  # stored before names were checked
    return 0


def _list_teams(store: KeyStore, args: argparse.Namespace) -> int:
    return _teams_out(args, store.list_teams(), store)


def _show_team(store: KeyStore, args: argparse.Namespace) -> int:
    return _teams_out(args, [store.team(args.team)], store)


def _teams_out(args: argparse.Namespace, teams: list[Team], store: KeyStore) -> int:
    if args.json:
        views = [team_view(t) for t in teams]
        print(json.dumps(views if args.action == "list" else views[0]))
        return 0
    counts: dict[str, int] = {}
    for key in store.list_keys():
        if key.team_id:
            counts[key.team_id] = counts.get(key.team_id, 0) + 1
    rows = [("ID", "NAME", "RPM", "TPM", "PARALLEL", "KEYS", "STATE")]
    for team in teams:
        rows.append((team.id, team.name, *_limit_cells(team.limits), str(counts.get(team.id, 0)),
                     "blocked" if team.blocked else "active"))
    _table(rows)
    return 0


# -- helpers --------------------------------------------------------------------------


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    given = {name: getattr(args, name) for name in
             ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "soft_budget_usd")
             if getattr(args, name, None) is not None}
    return parse_limits(given)


def _limit_cells(limits: Limits) -> tuple[str, str, str]:
    return _cell(limits.rpm), _cell(limits.tpm), _cell(limits.max_parallel)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:  # NaN and Infinity are not JSON: printed as such by --json, then stored as null
        value = json.loads(text, parse_constant=_not_json)
        orjson.dumps(value)  # what the store will write: at most 254 levels deep
    except (json.JSONDecodeError, RecursionError, TypeError, ValueError):  # orjson: too deep
        raise ValueError("--metadata must be a JSON object nested at most 254 levels "
                         "deep, its integers within 64 bits (and no NaN or Infinity)") from None
    if not isinstance(value, dict):
        raise ValueError("--metadata must be a JSON object")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _table(rows: Sequence[Sequence[str]]) -> None:
    rows = [[printable(cell) for cell in row] for row in rows]  # stored before names were checked
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

"""Virtual keys: making a secret, recognising it, and deciding whether a key may call.

Pure: the clock is a parameter (`now`, epoch seconds) and randomness comes only from
`secrets` when a new secret is made. The store keeps only `secret_hash(secret)`; the
secret itself is shown once, when it is made.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.routing import MAX_MODEL_NAME

__all__ = [
    "LATEST",
    "MAX_GRACE_SECONDS",
    "MAX_LIMIT",
    "MAX_PATTERNS",
    "RELEASE_DATE",
    "SECRET_PREFIX",
    "KeyState",
    "allowed_names",
    "check_grace",
    "display_prefix",
    "expiry_note",
    "has_budget",
    "is_restricted",
    "key_state",
    "key_view",
    "model_allowed",
    "new_secret",
    "parse_duration",
    "parse_expiry",
    "parse_limits",
    "parse_models",
    "parse_name",
    "presented_hash_valid",
    "printable",
    "release_allowed",
    "secret_hash",
    "team_view",
]

SECRET_PREFIX = "sk-aop-"
_DISPLAY_LENGTH = len(SECRET_PREFIX) + 6

KeyState = Literal["active", "expired", "blocked", "team_blocked"]


def new_secret() -> str:
    """A fresh secret: `sk-aop-` and 32 random bytes, URL-safe (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the store keeps: sha256 of the secret, hex. A secret has 256 random bits, so
    a plain hash is enough (no salt or slow KDF: there is nothing to guess)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The first characters of a secret, for people to tell keys apart (`sk-aop-AbC123`)."""
    return secret[:_DISPLAY_LENGTH]


def model_allowed(patterns: Iterable[str], *names: str | None) -> bool:
    """Whether any of `names` (the client's model name, the model a deployment serves)
    matches the key's allowed models: exact names or shell-style patterns (`gpt-4o*`).
    No patterns: every model."""
    patterns = tuple(patterns)
    if not patterns:
        return True
    for name in names:
        if name is None:
            continue
        for pattern in patterns:
            if name == pattern or fnmatch.fnmatchcase(name, pattern):
                return True
    return False


def release_allowed(patterns: Iterable[str], name: str) -> bool:
    """Whether a key's allow-list lets through a model Azure reads by its own name, never
    a deployment's (a grader's `model`: `o3-mini-2025-01-31`, a base model and its
    release): the name as written, or without its release's date (`o3-mini`), the model
    an allow-list names."""
    return model_allowed(patterns, name, RELEASE_DATE.sub("", name))


# A release's date at the end of a model's name (`o3-mini-2025-01-31`, `gpt-35-turbo-0125`):
# `RELEASE_DATE.sub("", name)` is the model's name (`o3-mini`, `gpt-35-turbo`).
RELEASE_DATE = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def has_budget(key: VirtualKey, team: Team | None) -> bool:
    """Whether the key or its team has a budget."""
    return key.limits.budget_usd is not None or (
        team is not None and team.limits.budget_usd is not None)


def is_restricted(key: VirtualKey, team: Team | None) -> bool:
    """A key with an allow-list or a budget (its own or its team's): objects whose owner
    the gateway does not know are refused to it (gateway/ownership.py)."""
    return bool(key.models) or has_budget(key, team)


def allowed_names(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The subset of `names` a key may use, in their order."""
    patterns = tuple(patterns)
    return [name for name in names if model_allowed(patterns, name)]


def key_state(key: VirtualKey, team: Team | None, now: float) -> KeyState:
    """Why a key may not call, or "active"."""
    if key.blocked:
        return "blocked"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired"
    if team is not None and team.blocked:
        return "team_blocked"
    return "active"


def presented_hash_valid(key: VirtualKey, presented_hash: str, now: float) -> bool:
    """Whether `presented_hash` opens `key`: its current secret, or the one it had before
    a rotation while the grace period lasts."""
    if presented_hash == key.secret_hash:
        return True
    return (
        key.previous_secret_hash is not None
        and presented_hash == key.previous_secret_hash
        and key.previous_valid_until is not None
        and now < key.previous_valid_until
    )


# -- reading what people type (the admin API's JSON, the CLI's flags) -------------------

_LIMIT_FIELDS = ("rpm", "tpm", "max_parallel")
# The largest rpm, tpm or max_parallel: the limiter counts in doubles, exact to 2**53
# (and past 64 bits the store could not write it: the CLI printed a traceback).
MAX_LIMIT = 2**53
_BUDGET_FIELDS = ("budget_usd", "soft_budget_usd")
_PERIODS = ("daily", "weekly", "monthly", "none")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# What a key's times may be: from the epoch to the year 9000. Past it a time cannot be
# shown (datetime stops at 9999, and a zone may push it further): such a key was stored,
# then every answer naming it was a 500, its secret never shown.
LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()
# The longest an old secret stays valid after a rotation: a rotation meant to cut off a
# leaked secret must not keep it for ever.
MAX_GRACE_SECONDS = 366 * 86400.0
_EXPIRY_FORMS = "expires must be like 30d, 12h, an ISO 8601 time, or null"


# The most names or patterns a key's allow-list holds (`parse_models`).
MAX_PATTERNS = 128
# C0 and C1 control characters and DEL: in a name they reach `keys list`'s terminal
# (ESC [ 2 J clears it, U+009B starts an escape sequence) and make the name unaddressable.
# And the bidirectional embeddings, overrides and isolates (U+202A-202E, U+2066-2069):
# they reorder what a table shows after them, so one name can read as another ("Trojan
# Source", CVE-2021-42574). Joiners (U+200C, U+200D) stay: scripts and emoji use them.
_AS_PRINTABLE = dict.fromkeys(
    [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)], "?")
_CONTROLS = frozenset(map(chr, _AS_PRINTABLE))


def parse_name(value: Any) -> str:
    """A key's or team's name: a string of 1 to 200 characters once trimmed, with no
    control or bidirectional formatting character. ValueError otherwise."""
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError("name must be a non-empty string (at most 200 characters)")
    if not _CONTROLS.isdisjoint(value):
        raise ValueError("name must not hold control or bidirectional formatting characters")
    return value.strip()


def printable(text: str) -> str:
    """`text` with each control or bidirectional formatting character shown as '?',
    for a terminal."""
    return text.translate(_AS_PRINTABLE)


def parse_limits(data: Mapping[str, Any]) -> dict[str, Any]:
    """The limit fields present in `data`, checked: rpm, tpm, max_parallel (integers
    from 1 to `MAX_LIMIT`, or null for none), budget_usd, soft_budget_usd (>= 0, or null),
    budget_period. ValueError names the field that is wrong."""
    out: dict[str, Any] = {}
    for name in _LIMIT_FIELDS:
        if name in data:
            value = data[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 < value <= MAX_LIMIT):
                raise ValueError(f"{name} must be an integer from 1 to {MAX_LIMIT} or null")
            out[name] = value
    for name in _BUDGET_FIELDS:
        if name in data:
            value = data[name]
            # finite: `--budget nan` was taken (NaN is never reached: no budget at all),
            # and so was `inf`
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a number >= 0 or null")
            out[name] = None if value is None else float(value)
    if "budget_period" in data:
        if data["budget_period"] not in _PERIODS:
            raise ValueError("budget_period must be one of " + ", ".join(_PERIODS))
        out["budget_period"] = data["budget_period"]
    return out


def parse_expiry(value: Any, now: float, *, creating: bool = False) -> float | None:
    """`30d`, `12h`, `45m`, `90s`, `2w` from now; an ISO 8601 time (UTC if no zone);
    epoch seconds; or None/"never" for no expiry. Between the epoch and the year 9000
    (`LATEST`), else a ValueError; and later than `now` when `creating` a key (one made
    expired could never be used: an update may expire a key now, `expiry_note`)."""
    if value is None or value == "never":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = float(value)
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(_EXPIRY_FORMS)
        elif (text := value.strip())[:-1].isdigit() and text[-1] in _UNITS:
            moment = now + int(text[:-1]) * _UNITS[text[-1]]
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            moment = when.timestamp()
    except (OverflowError, ValueError):  # a count past a float's range, a bad time
        raise ValueError(_EXPIRY_FORMS) from None
    if not 0.0 <= moment <= LATEST:  # NaN too
        raise ValueError("expires must be between 1970 and the year 9000")
    if creating and moment <= now:
        raise ValueError(f"expires must be later than now ({_iso(moment)} is not): a key "
                         "created expired could never be used")
    return moment


def expiry_note(expires_at: float | None, now: float) -> str | None:
    """What an update that set `expires_at` should tell the operator: that the key is
    expired from now on when that time is not later than `now` (a deliberate "expire
    now", or a mistyped date); else None."""
    if expires_at is None or expires_at > now:
        return None
    return (f"expires_at {_iso(expires_at)} is not later than now: the key is expired and "
            "refused (401) until a later expiry (or never) is set")


def parse_duration(text: str) -> float:
    """`90s`, `45m`, `12h`, `30d`, `2w`, or plain seconds."""
    text = text.strip()
    try:
        if text.isascii() and text.replace(".", "", 1).isdigit():  # "²" is a digit
            return float(text)
        if text.isascii() and text[:-1].isdigit() and text[-1:] in _UNITS:
            return float(int(text[:-1]) * _UNITS[text[-1]])
    except OverflowError:
        pass
    raise ValueError(f"{text[:40]!r} is not a duration like 90s, 45m, 12h or 30d")


def check_grace(seconds: float) -> float:
    """A rotation's grace, in seconds: 0 to `MAX_GRACE_SECONDS`, else a ValueError."""
    if not 0.0 <= seconds <= MAX_GRACE_SECONDS:  # NaN too
        raise ValueError("the grace must be between 0 and 366 days "
                         f"({MAX_GRACE_SECONDS:.0f} seconds)")
    return seconds


def parse_models(value: Any) -> tuple[str, ...]:
    """A list of model names or patterns, or one comma-separated string (empty parts
    skipped). None, `[]`, `""` or `*` alone: every model (no allow-list, as `keys list`
    shows it). A list holding an empty name, or a string of commas and blanks only, is a
    ValueError: taken as "no names", it let the key call every model, where its sender
    meant an allow-list."""
    if value is None:
        return ()
    if isinstance(value, str):
        names = tuple(part.strip() for part in value.split(",") if part.strip())
        if value.strip() and not names:
            raise ValueError("models names no model: give names or patterns, or an empty "
                             "list for every model")
        return _bounded(names)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("models must be a list of model names or patterns")
    names = tuple(v.strip() for v in value)
    if not all(names):
        raise ValueError("models must not hold an empty name (an empty list is every "
                         "model)")
    return _bounded(names)


def _bounded(names: tuple[str, ...]) -> tuple[str, ...]:
    """At most `MAX_PATTERNS` names of at most `MAX_MODEL_NAME` characters each: a
    pattern is compiled to a regular expression on the event loop at a key's first
    request in each worker, and matched on every request (a 200,000-character `*a*a...`
    took 3.7 s to compile, the loop blocked; 256 characters, 7 ms). `*` alone is no
    allow-list: kept as a pattern, the key matched every model yet counted as one with an
    allow-list (objects of unknown owner refused, uploads routed by the list), while
    `keys update --models '*'` cleared the list."""
    if len(names) > MAX_PATTERNS:
        raise ValueError(f"models may hold at most {MAX_PATTERNS} names or patterns")
    if any(len(name) > MAX_MODEL_NAME for name in names):
        raise ValueError(f"a model name or pattern is at most {MAX_MODEL_NAME} characters, "
                         "as a model name is")
    return () if set(names) == {"*"} else names


def key_view(key: VirtualKey) -> dict[str, Any]:
    """A key as shown to people: never its secret or the secret's hash."""
    view: dict[str, Any] = {
        "id": key.id, "name": key.name, "prefix": key.prefix, "team_id": key.team_id,
        "models": list(key.models), "limits": _limits_view(key.limits),
        "expires_at": _iso(key.expires_at), "blocked": key.blocked,
        "metadata": key.metadata, "created_at": _iso(key.created_at),
    }
    if key.previous_valid_until is not None:
        view["previous_secret_valid_until"] = _iso(key.previous_valid_until)
    return view


def team_view(team: Team) -> dict[str, Any]:
    return {"id": team.id, "name": team.name, "limits": _limits_view(team.limits),
            "blocked": team.blocked, "metadata": team.metadata,
            "created_at": _iso(team.created_at)}


def _limits_view(limits: Limits) -> dict[str, Any]:
    return {f.name: getattr(limits, f.name) for f in dataclasses.fields(limits)}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        # A row stored before times were bounded (`parse_expiry`): shown as the bound it
        # passed, never a 500 for every list that names it.
        return "9999-12-31T23:59:59+00:00" if epoch > 0 else "1970-01-01T00:00:00+00:00"

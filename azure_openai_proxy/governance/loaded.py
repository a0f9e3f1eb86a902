"""What the key directory hands the limiter at each reload (gateway/keydirectory.py
`on_reload`, governance/ratelimit.py `RateLimiter.forget`): every key's and team's limits
by subject ("key:ID", "team:ID"), the version they are of (the store's change log
position as of the read: every change, a hand edit's too, moves it on), and which
subjects the read changed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from azure_openai_proxy.governance.model import Limits

__all__ = ["LoadedLimits"]


class LoadedLimits(Mapping[str, Limits]):
    """Every subject's limits as loaded (`limits`: the key directory's own mapping, not a
    copy; it changes in place, and a new `LoadedLimits` is handed at each change), as of
    the store's change log position `version`; `changed`: the subjects whose limits the read
    set, changed or deleted (None: unknown, the first read); `whole`: a read of every key
    and team (the first, or the log no longer reached back, or another database), whose
    `changed` is what differs from the limits loaded before (a subject changed and set
    back since is not in it)."""

    __slots__ = ("changed", "limits", "version", "whole")

    def __init__(self, limits: Mapping[str, Limits], version: int,
                 changed: frozenset[str] | None = None, whole: bool = False) -> None:
        self.limits = limits
        self.version = version
        self.changed = changed
        self.whole = whole or changed is None

    def __getitem__(self, name: str) -> Limits:
        return self.limits[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.limits)

    def __len__(self) -> int:
        return len(self.limits)

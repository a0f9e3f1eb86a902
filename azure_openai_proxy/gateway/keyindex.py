"""The key directory's keys in memory, and how a change of a few keys is applied to them.

`KeyIndex.replace` builds it from every key and team (at start, or when the store's
change log no longer reaches back to the last read); `apply` changes only the keys and
teams a write touched, so a write costs a worker the rows it changed, not all of them
(at 50,000 keys a whole reload held a worker's loop some 100-200 ms, its thread ~0.5-0.9 s).
Both leave the same index: tests/unit/test_keydir_changes.py compares a directory that
applies changes with one that reads everything, on random histories.
No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from azure_openai_proxy.governance.model import Limits, Team, VirtualKey

__all__ = ["KeyIndex"]


class KeyIndex:
    """Every key by id and by secret hash (its current and, in a rotation's grace, its
    previous secret's), with its team; every team by id; and every key's and team's
    limits by subject ("key:ID", "team:ID"), the mapping the key directory hands its
    `on_reload`."""

    def __init__(self) -> None:
        self.by_hash: dict[str, tuple[VirtualKey, Team | None]] = {}
        self.keys: dict[str, VirtualKey] = {}
        self.teams: dict[str, Team] = {}
        self.limits: dict[str, Limits] = {}
        self._members: dict[str, set[str]] = {}  # team id -> its keys' ids

    def replace(self, keys: Iterable[VirtualKey], teams: Iterable[Team]) -> None:
        """Forget everything; hold these keys and teams."""
        for table in (self.by_hash, self.keys, self.teams, self.limits, self._members):
            table.clear()
        self.apply(keys, teams, (), ())

    def apply(self, keys: Iterable[VirtualKey], teams: Iterable[Team],
              gone_keys: Iterable[str], gone_teams: Iterable[str]) -> None:
        """These keys and teams as they are now (new or changed), and these ids deleted."""
        for key_id in gone_keys:
            self._drop_key(key_id)
        for team_id in gone_teams:
            self.teams.pop(team_id, None)
            self.limits.pop("team:" + team_id, None)
            self._rejoin(team_id)  # (a team is deleted only without keys)
        for team in teams:
            self.teams[team.id] = team
            self.limits["team:" + team.id] = team.limits
            self._rejoin(team.id)
        for key in keys:
            self._drop_key(key.id)
            self._add_key(key)

    def _add_key(self, key: VirtualKey) -> None:
        team = self.teams.get(key.team_id) if key.team_id else None
        entry = (key, team)
        self.by_hash[key.secret_hash] = entry
        if key.previous_secret_hash is not None:
            self.by_hash[key.previous_secret_hash] = entry
        self.keys[key.id] = key
        self.limits["key:" + key.id] = key.limits
        if key.team_id:
            self._members.setdefault(key.team_id, set()).add(key.id)

    def _drop_key(self, key_id: str) -> None:
        key = self.keys.pop(key_id, None)
        if key is None:
            return
        for hashed in (key.secret_hash, key.previous_secret_hash):
            # Only its own entry: the store keeps each current hash one key's, but a
            # hand edit may give another key this one's previous hash.
            if hashed is not None and (entry := self.by_hash.get(hashed)) is not None \
                    and entry[0] is key:
                del self.by_hash[hashed]
        del self.limits["key:" + key_id]
        if key.team_id:
            members = self._members.get(key.team_id)
            if members is not None:
                members.discard(key_id)
                if not members:
                    del self._members[key.team_id]

    def _rejoin(self, team_id: str) -> None:
        """The team's keys, entered again with the team as it is now (or none)."""
        team = self.teams.get(team_id)
        for key_id in self._members.get(team_id, ()):
            key = self.keys[key_id]
            entry = (key, team)
            self.by_hash[key.secret_hash] = entry
            if key.previous_secret_hash is not None:
                self.by_hash[key.previous_secret_hash] = entry

"""The shared row holds the version of the limits it was set for (governance/sharedrows.py):
two workers (`--workers 2`) whose key directories load the store's changes at different
times, in deterministic orders, a late reload skipping versions. Each reload is what the
key directory hands the limiter (`LoadedLimits`: the limits, the log position they are
of, and the subjects the read changed).

Before (session 27): a worker wrote the limits its own reload loaded, whatever another
had written since (two admin writes to one key within a poll left the older in force,
up to 0.5 s); a worker yet to reload followed only a change of a limit it had (a limit
added or removed waited for its reload), and a key whose limits were all removed gave its
row back, which that worker then claimed again with the limits it had."""

from __future__ import annotations

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.governance.sharedlimits import SharedLimits
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted


def _load(limiter: RateLimiter, version: int, limits: Limits, whole: bool = False) -> None:
    """The key directory's reload in `limiter`: key k's limits are `limits` as of the
    log's position `version` (a read of the change to k, or a whole read)."""
    limiter.forget(LoadedLimits({"key:k": limits}, version,
                                None if whole else frozenset({"key:k"})))


def _try(limiter: RateLimiter, limits: Limits, tokens: int = 0) -> Admission | Refusal:
    """A request of key k, authenticated with `limits` (what its worker loaded)."""
    return limiter.take(limiter.plan("k", limits, None, None), tokens)


def _limit(result: Admission | Refusal, kind: str = "tokens") -> str | None:
    return result.headers.get(f"x-ratelimit-limit-{kind}")


def _workers(shared: SharedWorkers, limits: Limits) -> tuple[
        SharedLimits, Clock, RateLimiter, RateLimiter]:
    """A table, and two workers that loaded key k's `limits` (version 1) and have each
    planned it."""
    spec, clock, first, second = shared.pair()
    for limiter in (first, second):
        _load(limiter, 1, limits)
        limiter.settle(admitted(_try(limiter, limits)), 0)
    return spec, clock, first, second


def test_an_older_limit_installed_late_does_not_replace_a_newer_one(shared: SharedWorkers) -> None:
    # Two admin writes to key k: the first (5,000) answered by the first worker, the
    # second (20,000) by the second. The first worker read the store before the second
    # write and installed what it read after the second had installed the newer: it
    # wrote 5,000 over 20,000, in force in both until its next poll (0.5 s).
    low, mid, high = Limits(tpm=1000), Limits(tpm=5000), Limits(tpm=20_000)
    _, _, first, second = _workers(shared, low)
    _load(second, 3, high)
    _load(first, 2, mid)  # late
    for limiter, loaded in ((second, high), (first, mid), (second, high)):
        assert _limit(admitted(_try(limiter, loaded, 100))) == "20000"
    admitted(_try(second, high, 19_000))  # 700 left
    _load(first, 3, high)  # its next poll: nothing given again
    result = _try(first, high, 1000)
    assert isinstance(result, Refusal) and result.kind == "tokens"
    assert _limit(result) == "20000"


def test_a_worker_yet_to_reload_follows_a_newer_lowered_limit_at_once(
        shared: SharedWorkers) -> None:
    low, high = Limits(rpm=2), Limits(rpm=100)
    _, _, first, second = _workers(shared, high)
    _load(second, 2, low)  # 98 left, lowered to 2: 2 left
    assert _limit(admitted(_try(first, high)), "requests") == "2"
    refused = _try(first, high)  # the second request of the lowered minute passed...
    admitted(refused)
    refused = _try(first, high)  # ...but not a third
    assert isinstance(refused, Refusal) and refused.kind == "requests"


def test_a_limit_added_in_another_worker_holds_at_once(shared: SharedWorkers) -> None:
    # The key had an RPM limit (so a row); a TPM limit is added through the admin API,
    # answered by the second worker. The first, yet to reload, counted no tokens.
    rpm_only, both = Limits(rpm=100), Limits(rpm=100, tpm=1000)
    _, _, first, second = _workers(shared, rpm_only)
    _load(second, 2, both)
    taken = admitted(_try(first, rpm_only, 600))
    assert _limit(taken) == "1000"
    # Its next plan counts tokens (the request path estimates them): the plan of the
    # request that found the change did not, its usage is counted when it is settled.
    assert first.plan("k", rpm_only, None, None).counts_tokens
    refused = _try(second, both, 600)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    refused = _try(first, rpm_only, 600)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"


def test_a_limit_added_to_a_key_without_any_holds_at_once(shared: SharedWorkers) -> None:
    # Without a limit the key had no row: the first worker, yet to reload, counted
    # its requests alone and let them all through until its reload. Its requests in
    # flight from before count in the row from its next request on (the other worker
    # cannot see them before).
    none, one = Limits(), Limits(max_parallel=1)
    _, _, first, second = _workers(shared, none)
    running = admitted(_try(first, none))
    _load(second, 2, one)
    for limiter, loaded in ((first, none), (second, one)):
        refused = _try(limiter, loaded)
        assert isinstance(refused, Refusal) and refused.kind == "parallel"
    first.settle(running, 0)
    second.settle(admitted(_try(second, one)), 0)
    admitted(_try(first, none))


def test_a_limit_removed_in_another_worker_holds_at_once(shared: SharedWorkers) -> None:
    both, tpm_only = Limits(rpm=1, tpm=1000), Limits(tpm=1000)
    _, _, first, second = _workers(shared, tpm_only)
    _load(first, 2, both)
    _load(second, 2, both)
    first.settle(admitted(_try(first, both)), 0)  # the minute's one request
    _load(second, 3, tpm_only)  # the RPM limit removed
    for _ in range(3):  # the first, yet to reload, counted by the removed RPM limit
        taken = admitted(_try(first, both))
        assert _limit(taken, "requests") is None
        first.settle(taken, 0)


def test_limits_all_removed_in_another_worker_hold_at_once(shared: SharedWorkers) -> None:
    # All of them removed: the row was given back, and the first worker, yet to reload,
    # claimed a new one with the limit it had (one request a minute, for up to a poll).
    one, none = Limits(rpm=1), Limits()
    _, _, first, second = _workers(shared, Limits(rpm=100))
    _load(first, 2, one)
    _load(second, 2, one)
    _load(second, 3, none)
    for limiter, loaded in ((first, one), (first, one), (second, none), (first, one)):
        taken = admitted(_try(limiter, loaded))
        assert _limit(taken, "requests") is None
        limiter.settle(taken, 0)
    _load(first, 3, none)
    _load(first, 4, one)  # set again: a full minute, in both
    admitted(_try(first, one))
    refused = _try(second, none)  # yet to reload
    assert isinstance(refused, Refusal) and refused.kind == "requests"


def test_a_change_to_a_key_another_worker_planned_holds_in_it_at_once(
        shared: SharedWorkers) -> None:
    # The admin write's worker never planned the key: it changes the key's row (newer
    # than the row's); the worker serving it follows at its next request.
    _spec, _clock, first, second = shared.pair()
    old, new = Limits(rpm=100, max_parallel=5), Limits(tpm=1000, max_parallel=1)
    _load(first, 1, old)
    _load(second, 1, old)
    running = admitted(_try(first, old))
    _load(second, 2, new)
    refused = _try(first, old, 10)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"
    first.settle(running, 10)
    assert _limit(admitted(_try(first, old, 10))) == "1000"


def test_a_restored_older_database_sets_the_rows_again(shared: SharedWorkers) -> None:
    # A backup restored under the gateway: its log position is below the one the
    # workers read before, so its limits are not "newer" than the rows'. A worker that
    # reads it (whole: its log's mark differs) sets every row of its keys again.
    restored, lost = Limits(rpm=5), Limits(rpm=1000)
    spec, _, first, second = _workers(shared, restored)
    _load(first, 9, lost)
    _load(second, 9, lost)
    _load(first, 4, restored, whole=True)
    assert _limit(admitted(_try(first, restored)), "requests") == "5"
    # The second, yet to read it, follows the row (it wrote the lost limit back until
    # it read it too, before session 29: the test below).
    _load(second, 4, restored, whole=True)
    for limiter in (first, second):
        assert _limit(admitted(_try(limiter, restored)), "requests") == "5"
    fresh = shared.limiter(spec, 1, Clock())  # a worker started after it
    _load(fresh, 4, restored, whole=True)
    assert _limit(admitted(_try(fresh, restored)), "requests") == "5"


def test_a_key_deleted_with_a_request_in_flight_gives_its_row_back_later(
        shared: SharedWorkers) -> None:
    # A reload looks only at the subjects it changed: a deleted key kept for a request
    # in flight is still given back by a later reload that did not change it.
    spec = shared.table(slots=4)
    clock = Clock()
    first = shared.limiter(spec, 0, clock)
    limits = Limits(rpm=100)
    first.forget(LoadedLimits({"key:k": limits}, 1, frozenset({"key:k"})))
    running = admitted(_try(first, limits))
    first.forget(LoadedLimits({}, 2, frozenset({"key:k"})))  # deleted
    first.settle(running, 0)
    first.forget(LoadedLimits({"key:o": limits}, 3, frozenset({"key:o"})))
    assert "key:k" not in first.snapshot()
    for name in ("a", "b", "c", "d"):  # the table's four rows: k's is free again
        admitted(first.take(first.plan(name, limits, None, None), 0))
    assert first.snapshot().keys() == {"key:a", "key:b", "key:c", "key:d"}


def test_a_worker_yet_to_read_a_restored_older_database_does_not_put_its_limits_back(
        shared: SharedWorkers) -> None:
    """Session 29: a worker that had not read the restored backup yet, planning the key
    anew (its plan dropped by its last reload), found its version (the replaced
    database's, higher) newer than the row's and wrote the lost limit back into it: every
    worker counted by it until that worker's next poll. It now follows the row."""
    restored, lost = Limits(rpm=5), Limits(rpm=1000)
    _, _, first, second = _workers(shared, restored)
    _load(first, 9, lost)
    _load(second, 9, lost)
    _load(first, 4, restored, whole=True)  # the first read the restored backup
    assert _limit(admitted(_try(second, lost)), "requests") == "5"  # main: 1000
    assert _limit(admitted(_try(first, restored)), "requests") == "5"  # main: 1000
    _load(second, 4, restored, whole=True)
    _load(first, 6, lost)  # a change after the restore: written by the first, not stale
    assert _limit(admitted(_try(second, restored)), "requests") == "1000"

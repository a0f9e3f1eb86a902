"""A key's limit changed or removed (governance/buckets.py `changed_level`,
sharedlimits.py `configure_shared`): one worker and the workers' shared table behave
alike and as an operator expects. A raised limit takes effect at once (what was used
this minute stays used, the rest of the new minute is there); a lowered one at once
too, without charging again what was used; a removed one drops its bucket, so that
the limit set again starts full. Before: a TPM or RPM removed and set again started
full with one worker but kept the shared row's debt or spent minute (a key of 1,000
TPM that owed 49,000 tokens, its TPM removed and set again, was still refused for 49
minutes with --workers 2 and passed with one worker); a raised limit kept the level of
the old one (a key that had spent its 1,000 tokens, raised to 10,000, waited 30 s for
a request of 5,000, both ways)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted
from tests.unit.test_sharedlimits_rows import _tagged_rows

MakeLimiter = Callable[[Clock], RateLimiter]


@pytest.fixture(params=["one worker", "shared table"])
def make(request: pytest.FixtureRequest, shared: SharedWorkers) -> MakeLimiter:
    if request.param == "one worker":
        return RateLimiter
    spec = shared.table()
    return lambda clock: shared.limiter(spec, 0, clock)


def _reload(limits: Limits, *limiters: RateLimiter) -> None:
    """The key directory's reload in each of `limiters`: key k's limits are `limits`."""
    for limiter in limiters:
        limiter.forget({"key:k": limits})


def _use(limiter: RateLimiter, limits: Limits, tokens: int, used: int) -> Admission:
    admission = admitted(limiter.take(limiter.plan("k", limits, None, None), tokens))
    limiter.settle(admission, used)
    return admission


def _try(limiter: RateLimiter, limits: Limits, tokens: int) -> Admission | Refusal:
    return limiter.take(limiter.plan("k", limits, None, None), tokens)


@pytest.mark.parametrize("without", [Limits(rpm=100), Limits(max_parallel=4), Limits()])
def test_a_tpm_removed_and_set_again_starts_full(make: MakeLimiter, without: Limits) -> None:
    clock = Clock()
    limiter = make(clock)
    limited = Limits(rpm=100 if without.rpm else None, tpm=1000,
                     max_parallel=without.max_parallel)
    _use(limiter, limited, 100, 50_000)  # 49,100 tokens owed
    clock.now += 1
    _use(limiter, without, 100, 100)  # no TPM: nothing owed
    clock.now += 1
    again = admitted(_try(limiter, limited, 100))
    assert again.headers["x-ratelimit-remaining-tokens"] == "900"


def test_an_rpm_removed_and_set_again_starts_full(make: MakeLimiter) -> None:
    clock = Clock()
    limiter = make(clock)
    limited, without = Limits(rpm=2, tpm=1000), Limits(tpm=1000)
    _use(limiter, limited, 1, 1)
    _use(limiter, limited, 1, 1)  # the minute's 2 requests spent
    _use(limiter, without, 1, 1)
    again = admitted(_try(limiter, limited, 1))
    assert again.headers["x-ratelimit-remaining-requests"] == "1"


def test_a_raised_tpm_takes_effect_at_once(make: MakeLimiter) -> None:
    clock = Clock()
    limiter = make(clock)
    _use(limiter, Limits(tpm=1000), 1000, 1000)  # the minute spent
    raised = admitted(_try(limiter, Limits(tpm=10_000), 5000))
    assert raised.headers["x-ratelimit-remaining-tokens"] == "4000"  # 9,000 more, 5,000 taken


def test_a_raised_tpm_pays_a_debt_by_what_it_raised(make: MakeLimiter) -> None:
    clock = Clock()
    limiter = make(clock)
    _use(limiter, Limits(tpm=1000), 100, 50_000)  # owes 49,000 of a 1,000 TPM
    refused = _try(limiter, Limits(tpm=20_000), 100)  # 19,000 more: still 30,000 owed
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    assert 90.0 < refused.retry_after < 91.0  # 30,100 tokens at 20,000 a minute
    admitted(_try(limiter, Limits(tpm=100_000), 100))  # 80,000 more: 50,000 left


def test_a_lowered_tpm_keeps_what_is_left_and_charges_nothing_again(make: MakeLimiter) -> None:
    clock = Clock()
    limiter = make(clock)
    _use(limiter, Limits(tpm=1000), 200, 200)  # 800 left
    lowered = admitted(_try(limiter, Limits(tpm=500), 400))
    assert lowered.headers["x-ratelimit-remaining-tokens"] == "100"  # 500 left, not 300
    assert isinstance(_try(limiter, Limits(tpm=500), 200), Refusal)


def test_a_change_applies_once_whichever_worker_sees_it_first(shared: SharedWorkers) -> None:
    # Each worker configures the new limit when it plans the key after its reload: the
    # raise is given once (the row's limit is the new one after the first), not per worker.
    _, _, first, second = shared.pair()
    _use(first, Limits(tpm=1000), 1000, 1000)
    _try(second, Limits(tpm=1000), 0)  # the second has planned the key too
    admitted(_try(first, Limits(tpm=10_000), 5000))  # 4,000 left
    refused = _try(second, Limits(tpm=10_000), 5000)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "4000"


@pytest.mark.parametrize("before, after, expected", [
    (Limits(tpm=1000), Limits(tpm=10_000), ("10000", "4000")),  # raised: the level kept
    (Limits(tpm=10_000), Limits(tpm=1000), ("1000", None)),  # lowered: not past it
])
def test_a_worker_yet_to_reload_counts_by_the_limit_another_set(
        shared: SharedWorkers, before: Limits, after: Limits,
        expected: tuple[str, str | None]) -> None:
    # The workers reload within a poll of each other (0.5 s): one that has not yet
    # cut a raised level down to its old limit (the raise was lost), or admitted past
    # a lowered one, and its x-ratelimit-limit-tokens said the old limit.
    _, clock, first, second = shared.pair()
    _use(first, before, 1000, 1000)
    _try(second, before, 0)
    _try(first, after, 0)  # the first reloaded: the row's limit is the new one
    clock.now += 0.001
    stale = _try(second, before, 5000)  # the second plans with what it had
    limit, remaining = expected
    if remaining is None:
        assert isinstance(stale, Refusal) and stale.never
        assert stale.headers["x-ratelimit-limit-tokens"] == limit
    else:
        assert isinstance(stale, Admission)
        assert stale.headers["x-ratelimit-limit-tokens"] == limit
        assert stale.headers["x-ratelimit-remaining-tokens"] == remaining
        _try(second, after, 0)  # its reload: nothing given again
        assert isinstance(_try(first, after, 4001), Refusal)


def test_a_request_authenticated_before_a_reload_plans_with_the_limits_loaded(
        make: MakeLimiter) -> None:
    # A request whose body was still coming in when the key was reloaded carries the
    # key's old limits: planned with them, the subject went back to the old limit and
    # the next request's plan raised it again, each time giving the raise anew (a key
    # of 1,000 TPM raised to 10,000 got 10,000 more tokens per such request).
    clock = Clock()
    limiter = make(clock)
    old, new = Limits(tpm=1000), Limits(tpm=10_000)
    limiter.forget({"key:k": old})
    _use(limiter, old, 1000, 1000)
    limiter.forget({"key:k": new})  # the raise is loaded: 9,000 left
    _use(limiter, new, 9000, 9000)  # spent
    for _ in range(3):
        refused = _try(limiter, old, 1000)  # a request authenticated before the reload
        assert isinstance(refused, Refusal)
        assert refused.headers["x-ratelimit-limit-tokens"] == "10000"
        assert isinstance(_try(limiter, new, 1000), Refusal)
    limiter.forget({"key:k": old})  # set back: in force at once
    after = _try(limiter, old, 0)
    assert isinstance(after, Admission)
    assert after.headers["x-ratelimit-limit-tokens"] == "1000"


def test_the_key_directory_tells_the_limiter_each_subjects_limits(tmp_path: Path) -> None:
    # A caller authenticated before a raise reaches the limiter after it (its body came
    # in meanwhile): the limiter plans with what the directory loaded.
    store = KeyStore.open(tmp_path / "gw.db")
    directory = KeyDirectory(tmp_path / "gw.db")
    limiter = RateLimiter(Clock())
    directory.on_reload = limiter.forget
    try:
        team = store.create_team("t", limits=Limits(rpm=50), now=1.0)
        key, secret = store.create_key("k", team=team.id, limits=Limits(tpm=1000), now=1.0)
        asyncio.run(directory.refresh())
        stale = directory.authenticate(secret)
        store.update_key(key.id, {"limits": {"tpm": 10_000}})
        asyncio.run(directory.refresh())
        assert stale.key is not None and stale.key.limits.tpm == 1000
        plan = limiter.plan(key.id, stale.key.limits, team.id, Limits())
        assert [(s.name, s.tpm, s.rpm) for s in plan.subjects] == [
            ("key:" + key.id, 10_000.0, None), ("team:" + team.id, None, 50.0)]
    finally:
        asyncio.run(directory.close())
        store.close()


def test_a_lowered_tpm_leaves_a_debt_of_a_day_of_it_at_most(make: MakeLimiter) -> None:
    clock = Clock()
    limiter = make(clock)
    _use(limiter, Limits(tpm=1000), 100, 50_000)  # owes 49,000: 49 minutes of it
    refused = _try(limiter, Limits(tpm=10), 1)  # 4,900 minutes of the new one
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    assert refused.retry_after <= 86_400 + 6  # a day's debt, and its token


def test_a_reload_puts_a_changed_limit_in_force_before_the_next_request(
        shared: SharedWorkers) -> None:
    # The worker that answers an admin write reloads before it answers, but configured
    # the key only when its next request planned it: until then neither it nor the
    # others counted by the new limit (a raise through the admin API was refused by
    # the other worker, whose reload had not come, as if not made).
    _, _, first, second = shared.pair()
    old = Limits(tpm=1000)
    _reload(old, first, second)
    _use(first, old, 1000, 1000)
    _try(second, old, 0)
    first.forget({"key:k": Limits(tpm=10_000)})  # the admin write's reload
    admitted(_try(second, old, 5000))  # the other, yet to reload


def test_requests_in_flight_before_a_parallel_limit_count_towards_it(
        make: MakeLimiter) -> None:
    # Taken while the key had no limit (counted by the worker alone: no row), then a
    # parallel limit of 1 is set: with one worker the request still running holds the
    # slot; the shared row started at 0 in flight and let one more through.
    clock = Clock()
    limiter = make(clock)
    _reload(Limits(), limiter)
    running = admitted(_try(limiter, Limits(), 0))
    _reload(Limits(max_parallel=1), limiter)
    refused = _try(limiter, Limits(max_parallel=1), 0)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"
    limiter.settle(running, None)
    admitted(_try(limiter, Limits(max_parallel=1), 0))


def test_a_limit_removed_and_set_again_leaves_no_phantom_request_in_flight(
        shared: SharedWorkers) -> None:
    # A worker's count of a subject's requests in flight is the row's total as last
    # read: after its row was given back it must start at 0 (it has none in flight
    # there, or the row would be kept), not at that total, which the next row it
    # claims would count as its own requests for good.
    _, _, first, second = shared.pair()
    limits = Limits(rpm=100)
    _reload(limits, first, second)
    running = admitted(_try(second, limits, 0))
    first.settle(admitted(_try(first, limits, 0)), None)  # it read 2, then 1 in flight
    second.settle(running, None)
    _reload(Limits(), first, second)  # the row is given back
    one = Limits(max_parallel=1)
    _reload(one, first, second)
    for limiter in (first, second, first):
        limiter.settle(admitted(_try(limiter, one, 0)), None)


def test_a_worker_whose_reload_skipped_a_raise_holds_the_next_debt(shared: SharedWorkers) -> None:
    # tests/e2e/test_govleft_limit_changes.py's sequence, as a trace of it ran: a key in
    # debt is raised and lowered back within one poll of the other worker, whose reload
    # skips the raise. The key store gives one `Limits` object per value (store/keys.py
    # `_limits`): that worker loads the very object it had, which its subject took for
    # "unchanged" while it counted by the raise it had followed in the row, and its next
    # plan wrote that raise back: the lowered limit was raised again, the new debt paid.
    _, clock, first, second = shared.pair()
    low, high = Limits(tpm=3000), Limits(tpm=30_000)
    _reload(low, first, second)
    _use(second, low, 0, 0)  # the second has planned the key too
    _use(first, low, 2000, 8000)  # 5,000 owed
    _reload(high, first)  # the admin write's worker: 22,000 left
    _use(second, low, 8, 8)  # yet to reload: counted by the row's 30,000 (followed)
    _reload(low, first)  # lowered: 3,000 left
    clock.now += 0.5
    _reload(low, second)  # its reload skipped the raise: what it had loaded
    clock.now += 1.5
    _use(first, low, 2000, 8000)  # in debt again
    for limiter in (second, first, second):
        refused = _try(limiter, low, 8)
        assert isinstance(refused, Refusal) and refused.kind == "tokens"
        assert refused.headers["x-ratelimit-limit-tokens"] == "3000"


def test_a_worker_yet_to_reload_and_new_to_a_key_joins_its_row(shared: SharedWorkers) -> None:
    # The first request of a key in a worker whose reload has not come yet carries the
    # old limit: its subject, new there, set the row back to it (a raise lost, then
    # given again in full by that worker's reload: the debt before it forgiven).
    _, _, first, second = shared.pair()
    low, high = Limits(tpm=3000), Limits(tpm=30_000)
    _reload(low, first, second)
    _use(first, low, 2000, 8000)  # 5,000 owed
    _reload(high, first)  # 27,000 more: 22,000 left
    stale = admitted(_try(second, low, 10))
    assert stale.headers["x-ratelimit-limit-tokens"] == "30000"
    assert 21_980 <= int(stale.headers["x-ratelimit-remaining-tokens"]) <= 21_990
    _reload(high, second)  # its reload gives nothing again
    refused = _try(first, high, 22_000)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"


def test_a_reload_changes_the_row_of_a_key_the_worker_never_planned(shared: SharedWorkers) -> None:
    # The admin write's worker reloads before it answers, but had no state of the key
    # (the other served it): its change waited for the other's poll, which meanwhile
    # refused a key whose raise had been answered.
    _, _, first, second = shared.pair()
    low, high = Limits(tpm=3000), Limits(tpm=30_000)
    _reload(low, first, second)
    _use(first, low, 2000, 8000)  # 5,000 owed
    _reload(high, second)  # the admin write's worker, which never planned the key
    raised = admitted(_try(first, low, 10))  # the first, yet to reload
    assert raised.headers["x-ratelimit-limit-tokens"] == "30000"


def test_a_change_reloaded_before_any_worker_planned_the_key_holds_in_every_worker(
        shared: SharedWorkers) -> None:
    # No row yet when the change is reloaded: the first worker to plan the key after
    # it, yet to reload, made the row with its old limit, which the other then joined
    # (found by the differential test's late reloads).
    _, _, first, second = shared.pair()
    old, new = Limits(rpm=1000), Limits(rpm=10)
    _reload(old, first, second)
    _reload(new, first)
    stale = admitted(_try(second, old, 0))
    assert stale.headers["x-ratelimit-limit-requests"] == "10"
    assert admitted(_try(first, new, 0)).headers["x-ratelimit-remaining-requests"] == "8"


@pytest.mark.parametrize("before, after, passes", [(2, 1, False), (1, 3, True)])
def test_a_changed_parallel_limit_holds_at_once_in_every_worker(
        shared: SharedWorkers, before: int, after: int, passes: bool) -> None:
    # max_parallel is in the shared row as RPM and TPM are: a worker yet to reload
    # counts by the limit another set (before: by its own for up to a poll, 0.5 s).
    _, _, first, second = shared.pair()
    old, new = Limits(max_parallel=before), Limits(max_parallel=after)
    _reload(old, first, second)
    _use(second, old, 0, 0)
    running = admitted(_try(first, old, 0))
    _reload(new, first)  # the admin write's worker
    stale = _try(second, old, 0)  # yet to reload
    if passes:
        second.settle(admitted(stale), None)
    else:
        assert isinstance(stale, Refusal) and stale.kind == "parallel"
    first.settle(running, None)
    _reload(new, second)
    for _ in range(after):
        admitted(_try(second, new, 0))
    refused = _try(first, new, 0)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"


def test_a_reload_that_changed_many_unused_keys_leaves_room_for_the_keys_in_use(
        shared: SharedWorkers) -> None:
    # A script changed the limits of 400 keys that no worker has planned: the reload
    # gave each a row (and a subject, in the worker that read it), 4 s for 10,000 keys
    # and 87 s for 100,000 on this machine, the event loop held; the table filled up,
    # and a key in use past it was limited per worker (review of session 27).
    spec, _, first, second = shared.pair(slots=128)
    used, old, new = Limits(rpm=1), Limits(rpm=1000), Limits(rpm=10)
    keys = {f"key:u{number}": old for number in range(400)} | {"key:k": used}
    for limiter in (first, second):
        limiter.forget(keys)
    admitted(first.take(first.plan("u399", old, None, None), 0))  # it has a row
    second.forget({name: new for name in keys} | {"key:k": used})
    assert _tagged_rows(spec) <= 64 + 1
    # A key with a row already is changed whatever the count: the first, yet to
    # reload, counts by the new limit.
    stale = admitted(first.take(first.plan("u399", old, None, None), 0))
    assert stale.headers["x-ratelimit-limit-requests"] == "10"
    admitted(first.take(first.plan("k", used, None, None), 0))
    refused = second.take(second.plan("k", used, None, None), 0)
    assert isinstance(refused, Refusal) and refused.kind == "requests"
    assert second.snapshot().keys() == {"key:k"}  # nothing kept of the others

"""A TPM debt in the workers' shared table (revgov review of govacct): a debt now stands
until refilled (down to a day's allowance), but a row idle for `IDLE_SECONDS` still went
to another name when the table had no free row, as if its buckets were full again (true
only while a debt was at most one minute's). The debt was then forgiven: a worker that
had not seen the key made it a full bucket. A row in debt is not idle until refilled."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal
from azure_openai_proxy.governance.sharedlimits import IDLE_SECONDS
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted

LIMITS = Limits(tpm=1000)
Workers = tuple[Clock, RateLimiter, RateLimiter]


@pytest.fixture
def workers(shared: SharedWorkers) -> Workers:
    """A clock and two workers of a table of one row."""
    return shared.pair(slots=1)[1:]


def _used(limiter: RateLimiter, tokens: int) -> None:
    limiter.settle(admitted(limiter.take(limiter.plan("k", LIMITS, None, None), 10)), tokens)


def test_a_row_in_debt_is_not_given_to_another_name(workers: Workers) -> None:
    clock, first, second = workers
    _used(first, 50_010)
    clock.now += IDLE_SECONDS + 1  # 2,016 refilled of a 49,020 debt
    admitted(second.take(second.plan("other", LIMITS, None, None), 10))
    refused = second.take(second.plan("k", LIMITS, None, None), 10)
    assert isinstance(refused, Refusal), "the key's debt was forgiven"
    assert refused.kind == "tokens" and refused.retry_after > 2_500


def test_a_row_refilled_from_its_debt_is_idle_again(workers: Workers) -> None:
    clock, first, second = workers
    _used(first, 2_010)
    clock.now += IDLE_SECONDS + 1  # a debt of 1,010 and a minute: full again
    admitted(second.take(second.plan("other", LIMITS, None, None), 1_000))
    # "other" has the row: it refuses on the first worker too
    assert isinstance(first.take(first.plan("other", LIMITS, None, None), 10), Refusal)

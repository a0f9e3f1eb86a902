"""The chained-context table per key (review of issue 13): one global table of 16,384
response ids, cleared when full, let one key's flood of responses flush every other
key's; a turn whose predecessor this worker does not know reserved nothing for its
context; and a chained turn refused as larger than the key's minute was told to shorten
its prompt, when the context of its earlier turns is what made it large."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import KeyRateLimited
from azure_openai_proxy.gateway.chained import (
    MISS_CEILING,
    ChainedContext,
    GuessedContext,
    fitted,
)
from azure_openai_proxy.gateway.governed import hold, release
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool

USAGE = {"input_tokens": 100, "output_tokens": 20}
ROUTED = (Pool("gpt-4o", ()), "gpt-4o")


def _caller(limits: Limits, key_id: str = "k1", team: Team | None = None) -> Caller:
    key = VirtualKey(key_id, "k", "hash", "sk-aop-abc", limits=limits,
                     team_id=team.id if team else None)
    return Caller(passthrough_key=None, key=key, team=team)


def _turn(previous: str) -> dict[str, object]:
    return {"model": "gpt-4o", "input": "x" * 40, "previous_response_id": previous,
            "max_output_tokens": 10}


def test_one_keys_flood_leaves_the_other_keys_entries() -> None:
    chained = ChainedContext(per_key=8, total=32)
    chained.note("k1", "resp_alice", USAGE)
    for n in range(10_000):
        chained.note("k2", f"resp_{n}", USAGE)
    assert chained.reserve(_turn("resp_alice"), "k1") == 120
    assert chained.reserve(_turn("resp_9999"), "k2") == 120  # its newest are kept
    assert len(chained) <= 32


def test_the_table_is_bounded_in_total_across_keys() -> None:
    chained = ChainedContext(per_key=8, total=32)
    for key in range(100):
        for n in range(8):
            chained.note(f"k{key}", f"resp_{key}_{n}", USAGE)
    assert len(chained) <= 32
    # the most recently active keys keep theirs
    assert chained.reserve(_turn("resp_99_7"), "k99") == 120


def test_a_key_reads_only_its_own_entries() -> None:
    chained = ChainedContext()
    chained.note("k1", "resp_1", USAGE, {"conversation": "conv_1"})
    assert chained.reserve({"conversation": "conv_1"}, "k1") == 120
    assert chained.reserve({"conversation": "conv_1"}, "k2") == MISS_CEILING  # not k2's


def test_a_miss_reserves_the_ceiling_fitted_to_the_minute() -> None:
    chained = ChainedContext()
    guess = chained.reserve(_turn("resp_unknown"), "k1")
    assert guess == MISS_CEILING and isinstance(guess, GuessedContext)
    assert chained.reserve({"conversation": {"id": "conv_x"}}, "k1") == MISS_CEILING
    # nothing chained: nothing to reserve
    for body in ({"input": "x"}, {"previous_response_id": ["resp_1"]}, None):
        assert chained.reserve(body, "k1") == 0
    # no TPM limit: the ceiling; else what the minute leaves beside the turn's own
    assert fitted(guess, 1_000, None) == MISS_CEILING
    assert fitted(guess, 1_000, 10_000.0) == 9_000
    assert fitted(guess, 12_000, 10_000.0) == 0
    assert fitted(5_000, 1_000, 2_000.0) == 5_000  # a count is what it is


def test_a_miss_is_held_within_the_smallest_minute_and_given_back_at_the_end() -> None:
    limiter = RateLimiter(lambda: 1000.0)
    team = Team("t1", "t", Limits(tpm=50_000))
    caller = _caller(Limits(tpm=100_000), team=team)
    guess = ChainedContext().reserve(_turn("resp_unknown"), "k1")
    held = hold(limiter, None, caller, _turn("resp_unknown"), ROUTED, "responses", 1024,
                chained=guess)
    assert held[0].reserved == 50_000  # the team's whole minute: 10 + 10 of its own
    record = RequestRecord("r1", "POST")
    record.usage = {"input_tokens": 300, "output_tokens": 10}
    release(limiter, None, held, record)
    assert limiter.snapshot()["team:t1"]["tokens"]["remaining"] == 50_000 - 310
    # without a TPM limit, a budget holds the ceiling's cost
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    budgeted = _caller(Limits(budget_usd=100.0), "k2")
    held = hold(limiter, guard, budgeted, _turn("resp_unknown"), ROUTED, "responses", 1024,
                chained=guess)
    assert held[1] is not None
    assert held[1].usd == pytest.approx((10 + MISS_CEILING) * 2.50 / 1e6 + 10 * 10.00 / 1e6)


def test_a_chained_turn_too_large_for_the_minute_says_its_context_is_counted() -> None:
    limiter = RateLimiter(lambda: 1000.0)
    caller = _caller(Limits(tpm=1_000))
    chained = ChainedContext()
    chained.note("k1", "resp_1", {"input_tokens": 1_500, "output_tokens": 200})
    context = chained.reserve(_turn("resp_1"), "k1")
    with pytest.raises(KeyRateLimited) as refused:
        hold(limiter, None, caller, _turn("resp_1"), ROUTED, "responses", 1024,
             chained=context)
    message = refused.value.message
    assert "1,700 tokens" in message and "previous_response_id" in message
    assert "lower max_tokens or the prompt" not in message


def test_a_chained_turn_that_must_wait_says_what_its_context_counts() -> None:
    limiter = RateLimiter(lambda: 1000.0)
    caller = _caller(Limits(tpm=1_000))
    hold(limiter, None, caller, {"input": "x" * 400, "max_output_tokens": 0}, ROUTED,
         "responses", 0)  # 100 of the minute's 1,000 in use
    guess = ChainedContext().reserve(_turn("resp_unknown"), "k1")
    with pytest.raises(KeyRateLimited) as refused:
        hold(limiter, None, caller, _turn("resp_unknown"), ROUTED, "responses", 1024,
             chained=guess)
    message = refused.value.message
    assert "Rate limit reached" in message and "Please try again in" in message
    assert "counting the 980 tokens of earlier turns" in message
    assert "not known to this gateway" in message


def test_a_conversation_made_here_holds_its_items_until_its_first_turn() -> None:
    chained = ChainedContext()
    chained.started("k1", "conv_empty", {})
    chained.started("k1", "conv_items", {"items": [
        {"type": "message", "role": "user", "content": "x" * 400}]})
    assert chained.reserve({"conversation": "conv_empty"}, "k1") == 0
    assert chained.reserve({"conversation": {"id": "conv_items"}}, "k1") == 100
    assert chained.reserve({"conversation": "conv_items"}, "k2") == MISS_CEILING
    chained.note("k1", "resp_1", USAGE, {"conversation": "conv_empty"})
    assert chained.reserve({"conversation": "conv_empty"}, "k1") == 120


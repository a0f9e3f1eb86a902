"""What a virtual key's request holds while it runs (gateway/governed.py): its limits
taken from the parsed body's estimate, settled with Azure's usage, given back on a
refusal."""

from __future__ import annotations

import orjson
import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import BudgetExhausted, KeyRateLimited
from azure_openai_proxy.gateway.governed import (
    deployment_allowed,
    hold,
    plain_chat_chars,
    pool_allowed,
    release,
    request_estimate,
    used_tokens,
)
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.estimate import max_output_tokens, prompt_tokens
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable, Target, servable

ROUTED = (Pool("gpt-4o", ()), "gpt-4o")
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 400}],
        "max_tokens": 100}  # 100 + 100 tokens estimated


def _caller(limits: Limits, team: Team | None = None, key_id: str = "k1") -> Caller:
    key = VirtualKey(key_id, "k", "hash", "sk-aop-abc", team_id=team.id if team else None,
                     limits=limits)
    return Caller(passthrough_key=None, key=key, team=team)


def _limiter() -> RateLimiter:
    return RateLimiter(lambda: 1000.0)


def test_a_request_holds_its_estimate_and_settles_with_the_usage() -> None:
    limiter = _limiter()
    team = Team("t1", "t", Limits(rpm=10))
    caller = _caller(Limits(tpm=1000), team)
    held = hold(limiter, None, caller, BODY, ROUTED, "chat/completions", 1024)
    assert held[0].headers["x-ratelimit-remaining-tokens"] == "800"
    state = limiter.snapshot()
    assert state["key:k1"]["in_flight"] == state["team:t1"]["in_flight"] == 1
    record = RequestRecord("r1", "POST")
    record.usage = {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100}
    release(limiter, None, held, record)
    state = limiter.snapshot()
    assert state["key:k1"]["tokens"]["remaining"] == 900
    assert state["team:t1"]["requests"]["remaining"] == 9
    assert state["key:k1"]["in_flight"] == state["team:t1"]["in_flight"] == 0


def test_a_refusal_takes_nothing_and_a_budget_refusal_gives_the_limits_back() -> None:
    limiter = _limiter()
    with pytest.raises(KeyRateLimited):
        hold(limiter, None, _caller(Limits(tpm=150)), BODY, ROUTED, "chat/completions", 0)
    assert limiter.snapshot()["key:k1"]["tokens"]["remaining"] == 150
    spent = _caller(Limits(tpm=1000, budget_usd=0.0), key_id="k2")
    with pytest.raises(BudgetExhausted):
        hold(limiter, BudgetGuard(lambda: 1000.0), spent, BODY, ROUTED, "chat/completions", 0)
    state = limiter.snapshot()["key:k2"]
    assert state["tokens"]["remaining"] == 1000 and state["in_flight"] == 0


def test_no_estimate_is_made_for_a_key_without_a_tpm_limit() -> None:
    limiter = _limiter()
    held = hold(limiter, None, _caller(Limits(rpm=5)), BODY, ROUTED, "chat/completions", 0)
    assert held[0].reserved == 0 and "x-ratelimit-limit-tokens" not in held[0].headers
    release(limiter, None, held, RequestRecord("r1", "POST"))
    # A TPM limit added later (a reload makes new plans) counts tokens again.
    limiter.forget({"key:k1"})
    held = hold(limiter, None, _caller(Limits(rpm=5, tpm=1000)), BODY, ROUTED,
                "chat/completions", 0)
    assert held[0].reserved == 200


# -- the allow-list over a pool found by a deployment's name -------------------------

def _shared_deployment_table() -> RoutingTable:
    """One deployment name, `team-a-shared`, serving two models: a Foundry Llama and an
    Azure OpenAI gpt-image-1."""
    return RoutingTable(load_settings({"models": {
        "llama": [{"deployment_name": "team-a-shared", "api": "foundry",
                   "endpoint": "https://f.services.ai.azure.com", "api_key": "k"}],
        "gpt-image-1": [{"deployment_name": "team-a-shared",
                         "endpoint": "https://a.openai.azure.com", "api_key": "k",
                         "api_version": "2025-04-01-preview"}],
    }, "client_keys": ["c"]}, {}))


@pytest.mark.parametrize("operation", ["chat/completions", "images/generations"])
def test_a_trimmed_pool_is_judged_by_its_models_not_the_name_sent(operation: str) -> None:
    # "team-a-*" matches the deployment's name, never a model it serves: gpt-image-1 is
    # not on the list, whichever members the operation leaves in the pool.
    patterns = ("team-a-*", "llama")
    pool = servable(_shared_deployment_table().resolve("team-a-shared"),
                    Target("deployment", operation))
    assert not pool_allowed(patterns, "team-a-shared", pool)
    assert pool_allowed((*patterns, "gpt-image-1"), "team-a-shared", pool)


def _renamed_table() -> RoutingTable:
    """`chat-small` moved to the deployment `small-v2` on resource a; a's old deployment
    named `chat-small` now serves `chat-large`; resource b serves `chat-small` under its
    own name."""
    a = {"endpoint": "https://a.openai.azure.com", "api_key": "k"}
    b = {"endpoint": "https://b.openai.azure.com", "api_key": "k"}
    return RoutingTable(load_settings({"models": {
        "chat-small": [{"deployment_name": "small-v2", **a},
                       {"deployment_name": "chat-small", **b}],
        "chat-large": [{"deployment_name": "chat-small", **a}],
    }, "client_keys": ["c"]}, {}))


def test_a_deployment_azure_runs_by_its_name_is_judged_by_its_model_per_resource() -> None:
    table = _renamed_table()
    small = table.resolve("chat-small")  # on a (small-v2) and on b (chat-small)
    on_a, on_b = (Pool("chat-small", (d,), transient=True) for d in small.deployments)
    patterns = ("chat-small",)
    # the client's name is allowed, but on a the deployment of that name is chat-large's
    assert pool_allowed(patterns, "chat-small", small)
    assert not deployment_allowed(patterns, table, on_a, "chat-small")
    assert not deployment_allowed(patterns, table, small, "chat-small")  # a among them
    assert deployment_allowed(patterns, table, on_b, "chat-small")
    assert deployment_allowed(patterns, table, on_a, "small-v2")
    assert not deployment_allowed(patterns, table, on_b, "small-v2")  # not on b: not known
    assert deployment_allowed(("chat-*",), table, small, "chat-small")
    # env mode's endpoint: a name not configured there judged by itself, if it can be one
    home = Pool("", (on_a.deployments[0],), dynamic=True)
    assert deployment_allowed(("gpt-4o*",), table, home, "gpt-4o")
    assert not deployment_allowed(("gpt-4o*",), table, home, "gpt-4o/../x")
    assert not deployment_allowed(("chat-small",), table, home, "chat-small")  # chat-large's


# -- the prompt, measured once ------------------------------------------------------

class _CountedText(str):
    """Prompt text that counts how often it is measured."""

    measured = 0

    def __len__(self) -> int:
        _CountedText.measured += 1
        return super().__len__()


@pytest.mark.parametrize("tpm", [None, 1000])
def test_a_budgeted_request_measures_its_prompt_once(tpm: int | None) -> None:
    budgets = BudgetGuard(lambda: 1000.0)
    budgets.prices = PriceTable.shipped()
    body = {**BODY, "messages": [{"role": "user", "content": _CountedText("x" * 400)}]}
    _CountedText.measured = 0
    held = hold(_limiter(), budgets, _caller(Limits(tpm=tpm, budget_usd=1.0)), body, ROUTED,
                "chat/completions", 1024)
    assert _CountedText.measured == 1
    assert held[0].reserved == (200 if tpm else 0)
    # gpt-4o: 104 prompt tokens (400 chars / 4 + 4 for the message) at $2.50, 100 at $10
    assert held[1] is not None and held[1].usd == pytest.approx((104 * 2.5 + 100 * 10) / 1e6)


# -- the usual request, read on a short path ------------------------------------------

_ESTIMATED = [
    BODY,
    {"model": "m", "messages": [{"role": "system", "content": "abc"},
                                {"role": "user", "content": "x" * 401}], "max_tokens": 7},
    {"messages": [], "max_tokens": 0},
    {"messages": [{"role": "user", "content": ""}]},  # no maximum: the default
    {"messages": [{"role": "user", "content": "hi", "name": "bob"}], "max_tokens": 5},
    {"messages": [{"content": "hi", "text": "more"}], "max_tokens": 5},  # no role
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcdef"}]}]},
    {"messages": [{"role": "assistant", "content": None,
                   "tool_calls": [{"function": {"arguments": "{}"}}]}]},
    {"messages": ["loose text", {"role": "user", "content": "x"}]},
    {"messages": [{"role": "user", "content": "x" * 9}], "input": "also", "max_tokens": 1},
    {"messages": [{"role": "user", "content": "x"}], "instructions": None},
    {"messages": {"role": "user", "content": "not a list"}},
    {"messages": None, "prompt": "abcdefgh", "max_tokens": 3},
    {"input": [{"role": "user", "content": "abc"}], "max_output_tokens": 9},
    {"prompt": ["ab", "cd"], "max_tokens": 4, "n": 3},
    {"messages": [{"role": "user", "content": "x" * 8}], "max_tokens": 4, "best_of": 2},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "n": None},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": True},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1,
     "max_completion_tokens": 12},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": None,
     "max_completion_tokens": 12},
    {"messages": [{"role": "user", "content": _CountedText("x" * 12)}]},
    {"model": "m"},
]


@pytest.mark.parametrize("body", _ESTIMATED)
@pytest.mark.parametrize("operation", ["chat/completions", "embeddings", "responses"])
def test_the_estimate_is_the_general_walks_own(body: dict[str, object], operation: str) -> None:
    expected = (prompt_tokens(body), max_output_tokens(body, 1024, operation))
    assert request_estimate(body, 1024, operation) == expected
    # Measured first (the chat request's file check does), then given: the same.
    assert request_estimate(body, 1024, operation, plain_chat_chars(body)) == expected


@pytest.mark.parametrize("usage", [
    None, {}, {"prompt_tokens": 90, "completion_tokens": 10, "total_tokens": 100},
    {"prompt_tokens": 90}, {"completion_tokens": 4}, {"input_tokens": 5, "output_tokens": 6},
    {"prompt_tokens": True, "completion_tokens": 3}, {"prompt_tokens": 2.0,
                                                      "completion_tokens": 3},
    {"prompt_tokens": None, "input_tokens": 7, "completion_tokens": 1},
])
def test_the_tokens_used_are_the_records_own_count(usage: dict[str, object] | None) -> None:
    record = RequestRecord("r1", "POST")
    record.usage = usage
    prompt, completion = record.tokens()
    expected = None if prompt is None and completion is None else (
        (prompt or 0) + (completion or 0))
    assert used_tokens(record) == expected


@pytest.mark.parametrize(("usage", "used"), [
    ({"prompt_tokens": 10, "completion_tokens": -1_000_000}, 10),
    ({"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2}, 3),
    ({"input_tokens": -7, "output_tokens": 2}, 2),
    ({"prompt_tokens": -9}, 0),
])
def test_a_negative_count_in_the_usage_is_read_as_none(
        usage: dict[str, object], used: int) -> None:
    # As the ledger reads it: a negative count settled with the limiter would give its
    # TPM limit back more than the request reserved (up to the whole minute's tokens).
    record = RequestRecord("r1", "POST")
    record.usage = usage
    assert used_tokens(record) == used


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "héllo wörld, 日本語 🙂" * 3}], "max_tokens": 9},
    {"messages": [{"role": "user", "content": "x" * 1_000_003}]},
    {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 99}},
        {"type": "text", "text": "what is this"}]}], "max_tokens": 3},
    {"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-1"}}, {"type": "text", "text": "sum"}]}]},
    {"messages": [{"role": "user", "content": 12}], "max_tokens": 1},
    {"messages": [{"role": "user", "content": ["loose", "strings"]}]},
    {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
    {"messages": [{"role": "user", "file": {"file_id": "file-1"}}]},
])
def test_the_estimate_of_unusual_messages_is_the_general_walks_own(
        body: dict[str, object]) -> None:
    expected = (prompt_tokens(body), max_output_tokens(body, 1024, "chat/completions"))
    assert request_estimate(body, 1024, "chat/completions") == expected
    plain = plain_chat_chars(body)
    assert request_estimate(body, 1024, "chat/completions", plain) == expected
    if b"file" in orjson.dumps(body):  # a message naming a file is never "plain"
        assert plain < 0


@pytest.mark.parametrize("message", [
    ["role", "content"], "ro", "role", 7, None, 2.5, True, {"role": "user"},
    {"role": "user", "name": "x"}, {"content": "x", "name": "y"},
    {"role": "user", "content": None}, {"role": "user", "content": ["x"]},
    {"role": "user", "content": "x", "name": "y"},
    # a content that is any other JSON value: told by its lack of `isascii`
    {"role": "user", "content": {"text": "x"}}, {"role": "user", "content": True},
    {"role": "user", "content": 2.5}, {"role": "user", "content": 7},
])
def test_a_message_that_is_not_a_role_and_a_string_is_not_plain(message: object) -> None:
    # `plain_chat_chars` tells a dict by what indexing a message does (no type check
    # per message): every other shape JSON can give is -1, first or after a plain one.
    for messages in ([message], [{"role": "user", "content": "ab"}, message]):
        body = {"messages": messages, "max_tokens": 3}
        assert plain_chat_chars(body) == -1
        expected = (prompt_tokens(body), max_output_tokens(body, 1024, "chat/completions"))
        assert request_estimate(body, 1024, "chat/completions", -1) == expected


def test_a_plain_chat_counts_its_contents_characters() -> None:
    body = {"messages": [{"role": "system", "content": "abc"},
                         {"content": "", "role": "user"}, {"role": "u", "content": "é" * 5}]}
    assert plain_chat_chars(body) == 13  # outside ASCII, its UTF-8 bytes: 2 an é
    assert plain_chat_chars({"messages": []}) == 0


def test_plain_chat_names_are_usual_names_without_other_prompts_or_choices() -> None:
    from azure_openai_proxy.gateway.chatfiles import USUAL_TOP_NAMES
    from azure_openai_proxy.gateway.governed import PLAIN_CHAT_NAMES

    assert PLAIN_CHAT_NAMES <= USUAL_TOP_NAMES
    # `plain_chat_chars` reads a body with any of these as not plain (a prompt besides
    # the messages), and the estimate's short path needs one choice.
    for name in ("input", "prompt", "instructions", "n", "best_of"):
        assert name not in PLAIN_CHAT_NAMES
    assert {"model", "messages", "max_tokens", "stream", "temperature"} <= PLAIN_CHAT_NAMES

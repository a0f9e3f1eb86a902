"""gateway/foundrybody.py: an OpenAI body fitted to Azure AI model inference's schema."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.errors import InvalidRequest, UnsupportedParameter
from azure_openai_proxy.gateway.foundrybody import fit_foundry_body

_CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_body_of_the_schema_alone_is_sent_as_it_came() -> None:
    body = {**_CHAT, "temperature": 0.2, "tools": [], "seed": 1, "top_k": 5}
    assert fit_foundry_body(body, "chat/completions", None) == (body, ())
    fitted = fit_foundry_body(body, "chat/completions", None)[0]
    assert fitted is body


def test_hints_are_dropped_and_noted_without_touching_the_clients_body() -> None:
    body = {**_CHAT, "user": "alice", "store": True, "parallel_tool_calls": False, "n": 1}
    fitted, notes = fit_foundry_body(body, "chat/completions", None)
    assert fitted == _CHAT
    assert notes == ("dropped:user", "dropped:store", "dropped:parallel_tool_calls", "dropped:n")
    assert body["user"] == "alice"  # never mutated
    embedded, _ = fit_foundry_body({"input": "x", "user": "alice"}, "embeddings", None)
    assert embedded == {"input": "x"}


@pytest.mark.parametrize(("name", "value"), [
    ("n", 2), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"1": 5}),
    ("functions", [{"name": "f"}]), ("audio", {"voice": "alloy"}),
])
def test_what_would_be_lost_silently_is_refused_naming_it(name: str, value: Any) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        fit_foundry_body({**_CHAT, name: value}, "chat/completions", None)
    assert caught.value.param == name


@pytest.mark.parametrize("option", ["error", "drop", "pass-through"])
def test_the_clients_own_choice_leaves_the_body_alone(option: str) -> None:
    body = {**_CHAT, "n": 3, "user": "alice"}
    assert fit_foundry_body(body, "chat/completions", option) == (body, ())


def test_another_extra_parameters_value_is_the_clients_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        fit_foundry_body(dict(_CHAT), "chat/completions", "ignore")
    assert caught.value.param == "extra-parameters"
    assert "pass-through" in caught.value.message


def test_a_prompt_cache_hint_is_dropped_as_the_cache_key_is() -> None:
    # OpenAI's `prompt_cache_retention` ("in_memory", "24h") only says how long a prompt
    # stays cached: the answer is the same without it; Foundry refuses it as extra.
    body = {**_CHAT, "prompt_cache_key": "k", "prompt_cache_retention": "24h"}
    fitted, notes = fit_foundry_body(body, "chat/completions", None)
    assert fitted == _CHAT
    assert notes == ("dropped:prompt_cache_key", "dropped:prompt_cache_retention")


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize("option", [None, "pass-through"])
def test_a_replayed_tool_calls_index_is_dropped(option: str | None) -> None:
    # What a client rebuilt from a stream's deltas sends back; Mistral refuses `index`.
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": None,
                "tool_calls": [{**_CALL, "index": 0}, {**_CALL, "id": "call_2", "index": 1}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "42"}]
    body = {"model": "m", "messages": history}
    fitted, notes = fit_foundry_body(body, "chat/completions", option)
    assert fitted["messages"][1]["tool_calls"] == [_CALL, {**_CALL, "id": "call_2"}]
    assert fitted["messages"][0] is history[0] and fitted["messages"][2] is history[2]
    assert notes == ("dropped:messages.tool_calls.index",)
    assert history[1]["tool_calls"][0]["index"] == 0  # never mutated
    plain = {"model": "m", "messages": [history[0], {"role": "assistant",
                                                     "tool_calls": [_CALL]}]}
    assert fit_foundry_body(plain, "chat/completions", option) == (plain, ())


@pytest.mark.parametrize("option", [None, "drop"])
def test_a_developer_message_becomes_a_system_one(option: str | None) -> None:
    developer = {"role": "developer", "content": "Answer briefly."}
    body = {"model": "m", "messages": [developer, {"role": "user", "content": "hi"}]}
    fitted, notes = fit_foundry_body(body, "chat/completions", option)
    assert fitted["messages"] == [{"role": "system", "content": "Answer briefly."},
                                  body["messages"][1]]
    assert notes == ("developer->system",)
    assert developer["role"] == "developer"  # never mutated

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy import compat
from azure_openai_proxy.apiversions import Since, deployment_need, parse_api_version
from azure_openai_proxy.compat import (
    CHAT_PARAMETERS,
    DeploymentProfile,
    adapt_chat_request,
    adapt_completions_request,
    infer_family,
)
from azure_openai_proxy.errors import UnsupportedParameter

MESSAGES = [{"role": "user", "content": "hi"}]


def profile(
    version: str | None = "2024-10-21", family: str = "standard", **kw: Any
) -> DeploymentProfile:
    api = "v1" if version in (None, "v1", "preview") else "dated"
    return DeploymentProfile(api=api, api_version=version, family=family, **kw)  # type: ignore[arg-type]


def chat(**params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": MESSAGES, **params}


# ---- api-versions ----


def test_versions_order_by_date_with_preview_before_the_ga_of_that_date() -> None:
    raw = [
        "v1",
        "2024-10-21",
        "2024-10-21-preview",
        "2024-09-01-preview",
        "2022-12-01",
        "2024-06-01",
    ]
    assert sorted(raw, key=parse_api_version) == [
        "2022-12-01",
        "2024-06-01",
        "2024-09-01-preview",
        "2024-10-21-preview",
        "2024-10-21",
        "v1",
    ]


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        ("2024-08-01-preview", False),
        ("2024-09-01-preview", True),
        ("2025-04-01-preview", True),
        ("2024-06-01", False),  # a GA before the feature
        ("2024-10-21", True),  # a later GA
        ("v1", True),
        ("preview", True),
    ],
)
def test_availability_compares_dates(version: str, accepted: bool) -> None:
    assert parse_api_version(version).accepts(Since("2024-09-01")) is accepted


def test_a_ga_column_later_than_the_preview_gates_ga_versions() -> None:
    tools = Since("2023-12-01", ga="2024-02-01")
    assert parse_api_version("2023-12-01-preview").accepts(tools)
    assert not parse_api_version("2023-12-01").accepts(tools)  # hypothetical GA that day
    assert parse_api_version("2024-02-01").accepts(tools)


def test_bad_version_strings_are_rejected() -> None:
    for raw in ("2024-1-01", "yesterday", "2024-10-21-beta", ""):
        with pytest.raises(ValueError):
            parse_api_version(raw)


def test_none_latest_and_preview_are_the_v1_api() -> None:
    assert all(parse_api_version(v).is_v1 for v in (None, "v1", "preview", "latest"))


# ---- model family ----


@pytest.mark.parametrize(
    "name",
    [
        "o1",
        "o1-preview",
        "o1-mini",
        "o3-mini",
        "o4-mini",
        "O3",
        "my-o3-mini",
        "prod_o1",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1",
        "gpt-5.1-chat",
        # a deployment called a chatbot still serves the reasoning gpt-5
        "gpt-5-chatbot",
        "gpt5-chatgpt",
        "gpt5",
        "team/o4mini",
        "codex-mini",
        "my-codex-mini",
        "o4",
        "my-o4",
    ],
)
def test_reasoning_names(name: str) -> None:
    assert infer_family(name) == "reasoning"


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4",
        "gpt-35-turbo",
        "o365-helper",
        "gpt-50",
        "gpt-5-chat",
        "gpt5-chat-latest",
        "text-embedding-3-small",
        "foo1",
    ],
)
def test_standard_names(name: str) -> None:
    assert infer_family(name) == "standard"


def test_any_name_may_reveal_the_family() -> None:
    assert infer_family("chat-prod", "o3-mini") == "reasoning"
    assert infer_family() == "standard"


# ---- reasoning models ----


def test_reasoning_renames_max_tokens_and_drops_sampling_parameters() -> None:
    body = chat(
        max_tokens=100,
        temperature=0.2,
        top_p=1,
        presence_penalty=0,
        frequency_penalty=0,
        logprobs=True,
        top_logprobs=2,
        logit_bias={"1": 2},
        seed=1,
    )
    got = adapt_chat_request(body, profile("2024-12-01-preview", "reasoning"))
    assert got.body == chat(max_completion_tokens=100, seed=1)
    assert got.changed
    assert got.notes == (
        "max_tokens->max_completion_tokens",
        "dropped:temperature",
        "dropped:top_p",
        "dropped:presence_penalty",
        "dropped:frequency_penalty",
        "dropped:logprobs",
        "dropped:top_logprobs",
        "dropped:logit_bias",
    )


def test_reasoning_with_both_token_limits_keeps_max_completion_tokens() -> None:
    got = adapt_chat_request(
        chat(max_tokens=5, max_completion_tokens=50), profile("v1", "reasoning")
    )
    assert got.body == chat(max_completion_tokens=50)
    assert got.notes == ("dropped:max_tokens",)


def test_reasoning_on_an_old_version_is_refused_naming_the_version() -> None:
    with pytest.raises(UnsupportedParameter) as raised:
        adapt_chat_request(chat(), profile("2024-10-21", "reasoning"))
    assert "2024-12-01-preview" in raised.value.message and "2024-10-21" in raised.value.message
    assert raised.value.status == 400 and raised.value.param == "model"


def test_a_reasoning_model_with_a_later_first_version_is_refused_naming_it() -> None:
    # o4-mini needs 2025-04-01-preview: on an explicit 2024-12-01-preview the gateway
    # refuses it (as Azure would) with the version it needs.
    o4 = profile("2024-12-01-preview", "reasoning", need=deployment_need("o4-mini", "o4-mini"))
    with pytest.raises(UnsupportedParameter) as raised:
        adapt_chat_request(chat(), o4)
    message = raised.value.message
    assert "(o4-mini)" in message and "2025-04-01-preview or later" in message
    assert "2024-12-01-preview" in message and raised.value.param == "model"
    served = profile("2025-04-01-preview", "reasoning", need=deployment_need("o4-mini", "o4-mini"))
    assert adapt_chat_request(chat(max_tokens=3), served).body == chat(max_completion_tokens=3)


def test_codex_mini_is_adapted_as_the_reasoning_model_it_is() -> None:
    # The table chooses 2025-04-01-preview for codex-mini "for reasoning models"; the
    # family agrees, so max_tokens is renamed and temperature dropped.
    name = "codex-mini"
    codex = profile("2025-04-01-preview", infer_family(name), need=deployment_need(name, name))
    got = adapt_chat_request(chat(max_tokens=5, temperature=0.3), codex)
    assert got.body == chat(max_completion_tokens=5)


def test_a_reasoning_name_the_table_does_not_list_is_refused_without_repeating_itself() -> None:
    o4 = profile("2024-10-21", infer_family("my-o4"), need=deployment_need("my-o4", "my-o4"))
    with pytest.raises(UnsupportedParameter) as raised:
        adapt_chat_request(chat(), o4)
    message = raised.value.message
    assert message.startswith("This deployment serves a reasoning model, which Azure enables")
    assert "(a reasoning model)" not in message and "2024-12-01-preview or later" in message


def test_o1_mini_is_served_from_its_own_first_version() -> None:
    o1_mini = profile("2024-10-21", "reasoning", need=deployment_need("o1-mini", "o1-mini"))
    assert adapt_chat_request(chat(max_tokens=3), o1_mini).body == chat(max_completion_tokens=3)


def test_standard_models_keep_sampling_parameters() -> None:
    body = chat(temperature=0.2, max_tokens=10)
    got = adapt_chat_request(body, profile("2024-10-21"))
    assert got.body is body and not got.changed and got.notes == ()


# ---- api-version gates ----


@pytest.mark.parametrize(
    ("params", "version", "notes"),
    [
        ({"stream_options": {"include_usage": True}}, "2024-02-01", ("dropped:stream_options",)),
        ({"parallel_tool_calls": False}, "2024-02-01", ("dropped:parallel_tool_calls",)),
        (
            {"store": True, "metadata": {"a": "b"}},
            "2024-10-21",
            ("dropped:store", "dropped:metadata"),
        ),
        ({"reasoning_effort": "low"}, "2024-10-21", ("dropped:reasoning_effort",)),
        ({"seed": 7}, "2023-05-15", ("dropped:seed",)),
        (
            {"prediction": {"type": "content", "content": "x"}},
            "2024-12-01-preview",
            ("dropped:prediction",),
        ),
        (
            {"service_tier": "auto", "prompt_cache_key": "k"},
            "2025-04-01-preview",
            ("dropped:service_tier", "dropped:prompt_cache_key"),
        ),
        ({"max_completion_tokens": 9}, "2024-06-01", ("max_completion_tokens->max_tokens",)),
        (
            {"max_completion_tokens": 9, "max_tokens": 5},
            "2024-08-01-preview",
            ("dropped:max_completion_tokens",),
        ),
        ({"tools": None, "logprobs": False}, "2023-05-15", ("dropped:tools", "dropped:logprobs")),
        (
            {"response_format": {"type": "text"}, "modalities": ["text"]},
            "2023-05-15",
            ("dropped:response_format", "dropped:modalities"),
        ),
    ],
)
def test_parameters_newer_than_the_version_are_dropped(
    params: dict[str, Any], version: str, notes: tuple[str, ...]
) -> None:
    got = adapt_chat_request(chat(stream=False, **params), profile(version))
    assert got.notes == notes
    assert got.changed
    for note in notes:
        name = note.split(":")[-1].split("->")[0]
        assert name not in got.body
    if "max_completion_tokens->max_tokens" in notes:
        assert got.body["max_tokens"] == 9
    if "dropped:max_completion_tokens" in notes:
        assert got.body["max_tokens"] == 5


@pytest.mark.parametrize(
    ("params", "version", "param", "needed"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "2023-10-01-preview",
            "tools",
            "2023-12-01-preview or later (GA 2024-02-01 or later)",
        ),
        ({"tool_choice": "auto"}, "2023-05-15", "tool_choice", "2023-12-01-preview"),
        ({"functions": [{"name": "f"}]}, "2023-06-01-preview", "functions", "2023-07-01-preview"),
        ({"function_call": "auto"}, "2023-05-15", "function_call", "2023-07-01-preview"),
        (
            {"data_sources": [{"type": "azure_search"}]},
            "2023-08-01-preview",
            "data_sources",
            "2023-12-01-preview",
        ),
        (
            {"response_format": {"type": "json_object"}},
            "2023-05-15",
            "response_format",
            "2023-12-01-preview",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "2024-06-01",
            "response_format",
            "2024-08-01-preview or later (GA 2024-10-21",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "2024-07-01-preview",
            "response_format",
            "2024-08-01-preview",
        ),
        ({"audio": {"voice": "alloy"}}, "2024-12-01-preview", "audio", "2025-01-01-preview"),
        ({"modalities": ["text", "audio"]}, "2024-10-21", "modalities", "2025-01-01-preview"),
        ({"logprobs": True}, "2023-05-15", "logprobs", "2023-12-01-preview"),
        (
            {"web_search_options": {"search_context_size": "low"}},
            "2025-04-01-preview",
            "web_search_options",
            "the v1 API",
        ),
    ],
)
def test_parameters_whose_loss_changes_meaning_are_refused(
    params: dict[str, Any], version: str, param: str, needed: str
) -> None:
    with pytest.raises(UnsupportedParameter) as raised:
        adapt_chat_request(chat(**params), profile(version))
    assert raised.value.param == param
    assert needed in raised.value.message and version in raised.value.message
    assert raised.value.body()["error"]["code"] == "unsupported_parameter"


@pytest.mark.parametrize(
    "version", ["2024-02-01", "2024-06-01", "2024-10-21", "2025-04-01-preview", "v1"]
)
def test_tools_are_fine_from_2024_02_01(version: str) -> None:
    body = chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto")
    assert adapt_chat_request(body, profile(version)).body is body


def test_json_schema_is_fine_on_2024_10_21_ga() -> None:
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert not adapt_chat_request(body, profile("2024-10-21")).changed


def test_the_v1_api_accepts_everything() -> None:
    body = chat(
        web_search_options={"a": 1}, store=True, service_tier="auto", max_completion_tokens=4
    )
    for api_version in (None, "v1", "preview"):
        assert adapt_chat_request(body, profile(api_version)).body is body


def test_unknown_parameters_pass_through() -> None:
    body = chat(some_future_param=1)
    assert adapt_chat_request(body, profile("2023-05-15")).body is body


# ---- stream usage ----


def test_stream_usage_is_injected_when_the_version_supports_it() -> None:
    got = adapt_chat_request(chat(stream=True), profile("2024-10-21"))
    assert got.body["stream_options"] == {"include_usage": True}
    assert got.usage_injected and not got.client_wants_usage
    assert got.notes == ("added:stream_options.include_usage",)


def test_client_asked_for_usage_nothing_to_inject() -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    got = adapt_chat_request(body, profile("2024-09-01-preview"))
    assert got.body is body and got.client_wants_usage and not got.usage_injected


def test_client_refusing_usage_still_gets_it_injected_for_accounting() -> None:
    body = chat(stream=True, stream_options={"include_usage": False, "other": 1})
    got = adapt_chat_request(body, profile("v1"))
    assert got.body["stream_options"] == {"include_usage": True, "other": 1}
    assert got.usage_injected and not got.client_wants_usage
    assert body["stream_options"] == {"include_usage": False, "other": 1}


@pytest.mark.parametrize("version", ["2024-08-01-preview", "2024-06-01", "2024-02-01"])
def test_no_usage_injection_before_stream_options_existed(version: str) -> None:
    got = adapt_chat_request(chat(stream=True), profile(version))
    assert not got.changed and not got.usage_injected


def test_client_usage_request_on_an_old_version_is_dropped_but_reported() -> None:
    got = adapt_chat_request(
        chat(stream=True, stream_options={"include_usage": True}), profile("2024-02-01")
    )
    assert "stream_options" not in got.body
    assert got.client_wants_usage and not got.usage_injected


def test_no_injection_when_not_streaming_or_not_wanted() -> None:
    assert not adapt_chat_request(chat(), profile("v1")).changed
    assert not adapt_chat_request(chat(stream=True), profile("v1"), want_stream_usage=False).changed


# ---- explicit overrides ----


def test_unsupported_params_from_config_are_always_dropped() -> None:
    p = profile("v1", unsupported_params=frozenset({"user", "seed"}))
    got = adapt_chat_request(chat(user="u", seed=3, temperature=1), p)
    assert got.body == chat(temperature=1)
    assert got.notes == ("dropped:seed", "dropped:user")


def test_overriding_stream_options_cancels_usage_injection() -> None:
    p = profile("v1", unsupported_params=frozenset({"stream_options"}))
    got = adapt_chat_request(chat(stream=True), p)
    assert "stream_options" not in got.body and not got.usage_injected


# ---- legacy completions ----


def test_completions_keep_integer_logprobs_on_old_versions() -> None:
    body = {"model": "x", "prompt": "hi", "logprobs": 2, "echo": True, "best_of": 2}
    assert adapt_completions_request(body, profile("2023-05-15")).body is body


def test_completions_drop_seed_and_inject_usage() -> None:
    got = adapt_completions_request(
        {"prompt": "hi", "seed": 1, "stream": True}, profile("2023-05-15")
    )
    assert got.notes == ("dropped:seed",)
    got = adapt_completions_request({"prompt": "hi", "stream": True}, profile("2024-10-21"))
    assert got.body["stream_options"] == {"include_usage": True} and got.usage_injected


# ---- properties ----

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=3),
    st.just({"type": "json_schema"}),
    st.just([{"type": "function"}]),
)
_bodies = st.dictionaries(
    st.sampled_from([*CHAT_PARAMETERS, "max_tokens", "temperature", "stream", "messages"]), _values
)
_VERSIONS = [
    "2023-05-15",
    "2023-07-01-preview",
    "2024-02-01",
    "2024-06-01",
    "2024-09-01-preview",
    "2024-10-21",
    "2024-12-01-preview",
    "v1",
]
_versions = st.sampled_from(_VERSIONS)


@given(_bodies, _versions, st.sampled_from(["reasoning", "standard"]))
def test_never_mutates_the_input_and_notes_match_changes(
    body: dict[str, Any], version: str, family: str
) -> None:
    before = copy.deepcopy(body)
    try:
        got = adapt_chat_request(body, profile(version, family))
    except UnsupportedParameter as exc:
        assert exc.param is not None
        return
    assert body == before
    assert got.changed == bool(got.notes) == (got.body is not body)
    if not got.changed:
        assert got.body == before


@given(_bodies, _versions)
def test_adapting_twice_changes_nothing_more(body: dict[str, Any], version: str) -> None:
    p = profile(version, "standard")
    try:
        once = adapt_chat_request(body, p)
    except UnsupportedParameter:
        return
    assert not adapt_chat_request(once.body, p).changed


def test_the_shortcut_answers_as_the_full_walk() -> None:
    """Every body of one or two parameters, on every version, family and operator drop
    list: `adapt_chat_request`'s shortcut gives exactly the full walk's answer."""
    names = [*CHAT_PARAMETERS, "max_tokens", "max_completion_tokens", "temperature", "stream"]
    values = [None, 5, True, {"type": "json_schema"}]
    bodies = [{a: v} for a in names for v in values]
    bodies += [{a: 5, b: True} for a in names for b in names if a < b]
    profiles = [profile(version, family, unsupported_params=drop)
                for version in _VERSIONS
                for family in ("reasoning", "standard")
                for drop in (frozenset(), frozenset({"seed", "stream_options"}))]
    for p in profiles:
        for body in bodies:
            outcomes: list[object] = []
            for adapt in (adapt_chat_request, lambda b, q: compat._adapt_chat_fully(b, q, True)):
                try:
                    outcomes.append(adapt(body, p))
                except UnsupportedParameter as exc:
                    outcomes.append(exc.message)
            assert outcomes[0] == outcomes[1], (p, body)


# ---- the short paths give the full walk's answer ----

_STREAM_OPTIONS: st.SearchStrategy[object] = st.sampled_from([
    None, {}, {"include_usage": True}, {"include_usage": False}, {"other": 1},
    {"include_usage": False, "other": 1}, [], "yes",
])
_EXTRA = st.dictionaries(
    st.sampled_from(["temperature", "seed", "tools", "response_format", "max_completion_tokens",
                     "parallel_tool_calls", "store", "prediction", "service_tier", "user"]),
    st.sampled_from([None, 1, True, {"type": "text"}, {"type": "json_schema"}, [{"t": 1}]]),
    max_size=3,
)


@given(
    version=st.sampled_from(["2023-05-15", "2024-02-01", "2024-06-01", "2024-08-01-preview",
                             "2024-09-01-preview", "2024-10-21", "2025-04-01-preview",
                             None, "preview"]),
    stream=st.sampled_from([True, False, None, "true"]),
    options=_STREAM_OPTIONS, extra=_EXTRA, want=st.booleans(),
    unsupported=st.sampled_from([frozenset(), frozenset({"stream_options"}),
                                 frozenset({"seed"})]),
)
def test_adapt_chat_request_short_paths_answer_as_the_full_walk(
    version: str | None, stream: object, options: object, extra: dict[str, Any], want: bool,
    unsupported: frozenset[str],
) -> None:
    """A standard model's body with nothing for its version (streamed or not, with any
    `stream_options`) takes a short path; its answer, or its refusal, is the full
    walk's (`_adapt_chat_fully`)."""
    p = profile(version, unsupported_params=unsupported)
    body = chat(**extra)
    if stream is not None:
        body["stream"] = stream
    if options is not None:
        body["stream_options"] = options
    before = copy.deepcopy(body)

    def outcome(adapt: Any) -> object:
        try:
            return adapt(copy.deepcopy(body), p, want)
        except UnsupportedParameter as exc:
            return ("refused", str(exc))

    full = outcome(lambda b, q, w: compat._adapt_chat_fully(b, q, w))
    assert outcome(lambda b, q, w: adapt_chat_request(b, q, want_stream_usage=w)) == full
    assert body == before


_ANY_EXTRA = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "seed", "tools", "response_format", "max_tokens",
                     "max_completion_tokens", "parallel_tool_calls", "store", "prediction",
                     "service_tier", "reasoning_effort", "logprobs", "modalities", "user",
                     "an_unknown_key", "stream_options"]),
    st.sampled_from([None, 0, 7, True, False, "x", {}, [], {"type": "text"},
                     {"type": "json_schema"}, {"include_usage": True}, ["text"]]),
    max_size=5,
)


@given(
    version=st.sampled_from(["2023-05-15", "2023-12-01-preview", "2024-02-01", "2024-06-01",
                             "2024-08-01-preview", "2024-09-01-preview", "2024-10-21",
                             "2024-12-01-preview", "2025-01-01-preview", "2025-04-01-preview",
                             None, "v1", "preview"]),
    family=st.sampled_from(["standard", "reasoning"]),
    stream=st.sampled_from([True, False, None, "true", 1]),
    extra=_ANY_EXTRA, want=st.booleans(),
    unsupported=st.sampled_from([frozenset(), frozenset({"stream_options"}),
                                 frozenset({"seed", "temperature"}), frozenset({"an_unknown_key"})]),
)
def test_adapt_chat_request_answers_as_the_full_walk_for_every_family_and_version(
    version: str | None, family: str, stream: object, extra: dict[str, Any], want: bool,
    unsupported: frozenset[str],
) -> None:
    """Every api-version (dated, preview, v1) and model family, with `max_tokens`,
    sampling parameters, gated and unknown keys, streamed or not: `adapt_chat_request`
    (short paths included) answers, or refuses, as the full walk does, and the profile's
    decisions made once are those its version gives."""
    p = profile(version, family, unsupported_params=unsupported)
    assert p.takes_stream_options == p.version.accepts(compat.STREAM_OPTIONS_SINCE)
    assert p.names_to_check == compat._chat_names_to_check(p)
    body = chat(**extra)
    if stream is not None:
        body["stream"] = stream
    before = copy.deepcopy(body)

    def outcome(adapt: Any) -> object:
        try:
            return adapt(copy.deepcopy(body), p, want)
        except UnsupportedParameter as exc:
            return ("refused", str(exc))

    full = outcome(lambda b, q, w: compat._adapt_chat_fully(b, q, w))
    assert outcome(lambda b, q, w: adapt_chat_request(b, q, want_stream_usage=w)) == full
    assert body == before

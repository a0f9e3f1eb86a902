from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.emulator import validation, wire_errors
from azure_openai_proxy.emulator.versions import dated_version, v1_version

MESSAGES = [{"role": "user", "content": "hi"}]


def rejection(body: dict[str, Any], version: str, model: str = "gpt-4o-2024-08-06",
              reasoning: bool = False) -> wire_errors.AzureError:
    parsed = v1_version(None) if version == "v1" else dated_version(version)
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_chat(body, parsed, model, reasoning)
    return caught.value


def accepts(body: dict[str, Any], version: str) -> None:
    validation.check_chat(body, dated_version(version), "gpt-4o-2024-08-06", False)


@pytest.mark.parametrize(
    ("param", "value", "first", "before"),
    [
        ("functions", [], "2023-07-01-preview", "2023-06-01-preview"),
        ("tools", [], "2023-12-01-preview", "2023-10-01-preview"),
        ("tools", [], "2024-02-01", "2023-05-15"),
        ("max_completion_tokens", 5, "2024-09-01-preview", "2024-08-01-preview"),
        ("parallel_tool_calls", True, "2024-10-21", "2024-06-01"),
        ("store", True, "2024-12-01-preview", "2024-10-21"),
        ("reasoning_effort", "low", "2024-12-01-preview", "2024-10-01-preview"),
        ("prediction", {}, "2025-01-01-preview", "2024-12-01-preview"),
    ],
)
def test_parameters_are_gated_by_version(param: str, value: Any, first: str, before: str) -> None:
    accepts({"messages": MESSAGES, param: value}, first)
    error = rejection({"messages": MESSAGES, param: value}, before)
    assert error.status == 400
    assert param in error.body["error"]["message"]


def test_stream_options_accepted_on_2024_10_21_although_its_spec_omits_it() -> None:
    accepts({"messages": MESSAGES, "stream": True, "stream_options": {}}, "2024-10-21")
    error = rejection({"messages": MESSAGES, "stream": True, "stream_options": {}}, "2024-06-01")
    assert error.body["error"]["message"] == "Unrecognized request argument supplied: stream_options"


def test_older_shape_names_several_arguments_sorted() -> None:
    """Azure lists them sorted, whatever the body's order: temperature, topP,
    presencePenalty, frequencyPenalty (in that order, 2023-05-15) were refused as
    "frequencyPenalty, presencePenalty, topP" (quarkus-langchain4j#285)."""
    error = rejection({"messages": MESSAGES, "store": True, "metadata": {}}, "2024-08-01-preview")
    assert error.body == {"error": {
        "message": "Unrecognized request arguments supplied: metadata, store",
        "type": "invalid_request_error", "param": None, "code": None,
    }}


def test_the_reported_body_is_refused_with_the_reported_words() -> None:
    body = {"messages": MESSAGES, "temperature": 1.0, "topP": 1.0, "presencePenalty": 0.0,
            "frequencyPenalty": 0.0}
    assert rejection(body, "2023-05-15").body["error"]["message"] == (
        "Unrecognized request arguments supplied: frequencyPenalty, presencePenalty, topP")


def test_newer_shape_is_unknown_parameter() -> None:
    error = rejection({"messages": MESSAGES, "store": True}, "2024-10-21")
    assert error.body == {"error": {
        "message": "Unknown parameter: 'store'.", "type": "invalid_request_error",
        "param": "store", "code": "unknown_parameter",
    }}


def test_unknown_parameters_rejected_even_on_v1() -> None:
    assert rejection({"messages": MESSAGES, "frobnicate": 1}, "v1").body["error"]["code"] == (
        "unknown_parameter"
    )


def test_missing_messages_has_both_shapes() -> None:
    old = rejection({}, "2024-06-01").body["error"]
    assert old["message"] == "'messages' is a required property"
    new = rejection({}, "2024-10-21").body["error"]
    assert new["code"] == "missing_required_parameter" and new["param"] == "messages"


def test_bad_messages_types() -> None:
    assert rejection({"messages": "hi"}, "2024-10-21").body["error"]["code"] == "invalid_type"
    assert rejection({"messages": []}, "2024-10-21").body["error"]["code"] == "empty_array"
    bad_tokens = rejection({"messages": MESSAGES, "max_tokens": "9"}, "2024-10-21")
    assert bad_tokens.body["error"]["param"] == "max_tokens"


def test_reasoning_model_rejects_max_tokens() -> None:
    error = rejection({"messages": MESSAGES, "max_tokens": 10}, "2024-12-01-preview",
                      "o3-mini-2025-01-31", True)
    assert error.body["error"] == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter",
    }


@pytest.mark.parametrize("param", ["temperature", "top_p", "presence_penalty",
                                   "frequency_penalty", "logprobs"])
def test_reasoning_model_rejects_sampling(param: str) -> None:
    error = rejection({"messages": MESSAGES, param: 0.5}, "2025-01-01-preview",
                      "o3-mini-2025-01-31", True)
    assert error.body["error"]["param"] == param
    assert error.body["error"]["code"] == "unsupported_parameter"


def test_reasoning_model_needs_2024_12_01_preview() -> None:
    """Azure's message keeps its template's `{modelName}` unfilled (azure-sdk-for-python#40759,
    semantic-kernel#12268, langchain4j#2636)."""
    error = rejection({"messages": MESSAGES}, "2024-10-21", "o3-mini-2025-01-31", True)
    assert error.body == {"error": {
        "code": "BadRequest",
        "message": "Model {modelName} is enabled only for api versions 2024-12-01-preview and later",
    }}


@pytest.mark.parametrize(
    ("model", "first", "before"),
    [
        ("o1-mini-2024-09-12", "2024-09-01-preview", "2024-08-01-preview"),
        ("o1-2024-12-17", "2024-12-01-preview", "2024-10-01-preview"),
        ("o3-mini-2025-01-31", "2024-12-01-preview", "2024-10-21"),
        ("o3-2025-04-16", "2025-04-01-preview", "2025-03-01-preview"),
        ("o4-mini-2025-04-16", "2025-04-01-preview", "2024-12-01-preview"),
        ("gpt-5-mini-2025-08-07", "2025-04-01-preview", "2025-03-01-preview"),
    ],
)
def test_each_reasoning_model_needs_its_own_first_version(model: str, first: str, before: str) -> None:
    # Wire reference, section 8: not every reasoning model starts on 2024-12-01-preview.
    validation.check_chat({"messages": MESSAGES}, dated_version(first), model, True)
    error = rejection({"messages": MESSAGES}, before, model, True)
    assert error.body["error"]["message"] == (
        f"Model {{modelName}} is enabled only for api versions {first} and later"
    )


def test_json_schema_needs_2024_08_01_preview() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    accepts({"messages": MESSAGES, "response_format": fmt}, "2024-08-01-preview")
    assert rejection({"messages": MESSAGES, "response_format": fmt}, "2024-06-01").status == 400


def test_stream_options_without_stream() -> None:
    error = rejection({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "v1")
    assert error.body["error"]["param"] == "stream_options"


def test_embeddings_and_completions_checks() -> None:
    version = dated_version("2024-10-21")
    with pytest.raises(wire_errors.AzureError, match="input"):
        validation.check_embeddings({}, version)
    with pytest.raises(wire_errors.AzureError, match=r"encoding_format|float"):
        validation.check_embeddings({"input": "x", "encoding_format": "int8"}, version)
    with pytest.raises(wire_errors.AzureError, match="prompt"):
        validation.check_completions({"prompt": 5}, version)
    validation.check_completions({"prompt": "x", "best_of": 2, "echo": True}, version)


def test_context_length_exceeded_with_a_maximum_names_both_parts() -> None:
    """azure-sdk-for-net#41892 (gpt-4-32k), azure-search-openai-demo#1199: Azure's words."""
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_context(9969, {"max_tokens": 26000}, 32768, chat=True)
    assert (caught.value.status, caught.value.body) == (400, {"error": {
        "message": "This model's maximum context length is 32768 tokens. However, you "
        "requested 35969 tokens (9969 in the messages, 26000 in the completion). Please "
        "reduce the length of the messages or completion.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
    }})


def test_context_length_exceeded_without_a_maximum_counts_the_messages() -> None:
    """gpt-researcher#680 (Azure gpt-4o), kernel-memory#516."""
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_context(192041, {}, 128000, chat=True)
    assert caught.value.body["error"]["message"] == (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 192041 tokens. Please reduce the length of the messages.")
    with pytest.raises(wire_errors.AzureError):  # max_completion_tokens counts as max_tokens
        validation.check_context(100, {"max_completion_tokens": 29}, 128, chat=True)


def test_a_request_that_fits_or_has_no_window_passes() -> None:
    validation.check_context(100, {"max_tokens": 28}, 128, chat=True)
    validation.check_context(10**9, {}, None, chat=True)
    validation.check_context(112, {}, 128, chat=False)  # completions' default 16 fits


def test_legacy_completions_context_error_keeps_the_older_words() -> None:
    """llama_index#402 (Azure, 2023): code and param null, "in your prompt; ... for the
    completion"."""
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_context(3383, {"max_tokens": 0}, 2046, chat=False)
    assert caught.value.body == {"error": {
        "message": "This model's maximum context length is 2046 tokens, however you requested "
        "3383 tokens (3383 in your prompt; 0 for the completion). Please reduce your prompt; "
        "or completion length.",
        "type": "invalid_request_error", "param": None, "code": None,
    }}


def test_max_tokens_past_the_models_output_limit_is_refused() -> None:
    """charmbracelet/catwalk#41 (Azure gpt-4o, gpt-4o-mini, gpt-4.1 at 20000): Azure's body."""
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_max_tokens({"max_tokens": 20000}, 16384)
    assert (caught.value.status, caught.value.body) == (400, {"error": {
        "message": "max_tokens is too large: 20000. This model supports at most 16384 "
        "completion tokens, whereas you provided 20000.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_value",
    }})
    validation.check_max_tokens({"max_tokens": 16384}, 16384)
    validation.check_max_tokens({"max_tokens": 10**6}, None)


@pytest.mark.parametrize(("value", "shown"), [(0.5, "0.5"), (0, "0"), (0.0, "0"), (0.1, "0.1"),
                                              (1e-08, "1E-8")])
def test_gpt5_takes_only_the_default_temperature(value: float, shown: str) -> None:
    """Azure's gpt-5 family: "Unsupported value: 'temperature' does not support 0.5 with this
    model. Only the default (1) value is supported.", code unsupported_value
    (ChatGPTNextWeb/NextChat#6604 at 0.5, BerriAI/litellm#13397 at 0,
    Azure/agentic-cli-for-aks#8 at 1E-8); o-series models refuse any temperature."""
    error = rejection({"messages": MESSAGES, "temperature": value}, "2025-04-01-preview",
                      "gpt-5-mini-2025-08-07", True)
    assert error.body == {"error": {
        "message": f"Unsupported value: 'temperature' does not support {shown} with this "
        "model. Only the default (1) value is supported.",
        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value",
    }}
    validation.check_chat({"messages": MESSAGES, "temperature": 1}, dated_version(
        "2025-04-01-preview"), "gpt-5-mini-2025-08-07", True)
    o3 = rejection({"messages": MESSAGES, "temperature": 1}, "2025-04-01-preview",
                   "o3-mini-2025-01-31", True)
    assert o3.body["error"]["code"] == "unsupported_parameter"


def test_later_gpt5_samples_at_reasoning_effort_none() -> None:
    """gpt-5.1 and later default to reasoning_effort none and then take temperature and
    top_p (BerriAI/litellm#17011, vercel/ai#10940, langchain-ai/langchain#35424); asked to
    reason, or as gpt-5 itself, temperature is the default's only."""
    preview = dated_version("2025-04-01-preview")
    sampled = {"messages": MESSAGES, "temperature": 0.2, "top_p": 0.9}
    validation.check_chat(sampled, preview, "gpt-5.1-2025-11-13", True)
    validation.check_chat({**sampled, "reasoning_effort": "none"}, preview, "gpt-5.2", True)
    reasoning = rejection({**sampled, "reasoning_effort": "low"}, "2025-04-01-preview",
                          "gpt-5.1-2025-11-13", True)
    assert reasoning.body["error"]["code"] == "unsupported_value"
    gpt5 = rejection(sampled, "2025-04-01-preview", "gpt-5-2025-08-07", True)
    assert gpt5.body["error"]["code"] == "unsupported_value"


def test_completions_max_tokens_null_reserves_the_default_16() -> None:
    """`max_tokens: null` is completions' default maximum, 16, as an absent one is (the
    context check counted it as 0, so 113 prompt tokens passed a 128-token window)."""
    with pytest.raises(wire_errors.AzureError) as caught:
        validation.check_context(113, {"max_tokens": None}, 128, chat=False)
    assert "(113 in your prompt; 16 for the completion)" in caught.value.body["error"]["message"]

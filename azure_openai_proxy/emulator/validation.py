"""Request-body checks Azure makes before generating anything (wire reference, section 3).

Pure: each function takes the parsed body and the api-version and either returns
or raises the `AzureError` Azure would answer with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.versions import ApiVersion, reasoning_since

_ALWAYS = "0000-00-00"
_V1_ONLY = "9999-12-31"

CHAT_PARAMS: dict[str, str] = {
    **dict.fromkeys(
        (
            "messages", "model", "temperature", "top_p", "n", "stream", "stop", "max_tokens",
            "presence_penalty", "frequency_penalty", "logit_bias", "user",
        ),
        _ALWAYS,
    ),
    **dict.fromkeys(("functions", "function_call"), "2023-07-01"),
    **dict.fromkeys(
        ("tools", "tool_choice", "data_sources", "seed", "logprobs", "top_logprobs",
         "response_format"),
        "2023-12-01",
    ),
    **dict.fromkeys(
        ("max_completion_tokens", "parallel_tool_calls", "stream_options"), "2024-09-01"
    ),
    **dict.fromkeys(("store", "metadata", "reasoning_effort"), "2024-12-01"),
    **dict.fromkeys(("prediction", "audio", "modalities"), "2025-01-01"),
    "user_security_context": "2025-04-01",
    **dict.fromkeys(
        ("service_tier", "verbosity", "prompt_cache_key", "safety_identifier",
         "web_search_options"),
        _V1_ONLY,
    ),
}
COMPLETION_PARAMS: dict[str, str] = {
    **dict.fromkeys(
        (
            "prompt", "model", "suffix", "max_tokens", "temperature", "top_p", "n", "stream",
            "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty", "best_of",
            "logit_bias", "user",
        ),
        _ALWAYS,
    ),
    "seed": "2023-12-01",
    "stream_options": "2024-09-01",
}
EMBEDDING_PARAMS: dict[str, str] = dict.fromkeys(
    ("input", "model", "user", "input_type", "encoding_format", "dimensions"), _ALWAYS
)
_REASONING_UNSUPPORTED = (
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
)
_NO_REASONING_SAMPLING = frozenset({"temperature", "top_p", "logprobs", "top_logprobs"})
_LATER_GPT5 = re.compile(r"gpt-5\.\d")
# `stream_options` is accepted on 2024-10-21 although that GA spec omits it.
_GA_EXTRAS = {"2024-10-21": frozenset({"stream_options"})}


def reject_unknown(body: Mapping[str, Any], table: Mapping[str, str], version: ApiVersion) -> None:
    """Raise the version's "unrecognized argument" 400 for parameters it does not know."""
    extras = _GA_EXTRAS.get(version.raw, frozenset())
    rejected = [
        key for key in body
        if key not in extras and not version.at_least(table.get(key, _V1_ONLY + "~"))
    ]
    if rejected:
        raise unrecognized(rejected, version)


def unrecognized(names: Iterable[str], version: ApiVersion) -> wire_errors.AzureError:
    """The two shapes of "you sent a parameter I don't know", chosen by api-version."""
    names = list(names)
    if version.new_error_shape:
        return wire_errors.invalid_request(
            f"Unknown parameter: '{names[0]}'.", names[0], "unknown_parameter"
        )
    if len(names) == 1:
        return wire_errors.invalid_request(f"Unrecognized request argument supplied: {names[0]}")
    # Sorted, not in the body's order: a body of temperature, topP, presencePenalty,
    # frequencyPenalty got "frequencyPenalty, presencePenalty, topP" (quarkus-langchain4j#285).
    return wire_errors.invalid_request(
        f"Unrecognized request arguments supplied: {', '.join(sorted(names))}"
    )


def missing(name: str, version: ApiVersion) -> wire_errors.AzureError:
    if version.new_error_shape:
        return wire_errors.invalid_request(
            f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
        )
    return wire_errors.invalid_request(f"'{name}' is a required property")


def invalid_type(name: str, expected: str, value: object) -> wire_errors.AzureError:
    got = {str: "a string", bool: "a boolean", int: "an integer", float: "a decimal",
           list: "an array", dict: "an object", type(None): "null"}.get(type(value), "a value")
    return wire_errors.invalid_request(
        f"Invalid type for '{name}': expected {expected}, but got {got} instead.",
        name,
        "invalid_type",
    )


def check_chat(body: Mapping[str, Any], version: ApiVersion, model: str, reasoning: bool) -> None:
    """Everything Azure checks on a chat request before answering it."""
    since = reasoning_since(model) if reasoning else ""
    if reasoning and not version.at_least(since):
        # Azure leaves its template's placeholder unfilled: "Model {modelName} is ..."
        # (azure-sdk-for-python#40759, semantic-kernel#12268, langchain4j#2636,
        # genaiscript#1121, github-models#10, Feb-May 2025; January's reports named the
        # model, azure-sdk-for-net#47809).
        raise wire_errors.bad_request(
            f"Model {{modelName}} is enabled only for api versions {since}-preview and later"
        )
    reject_unknown(body, CHAT_PARAMS, version)
    messages = body.get("messages")
    if messages is None:
        raise missing("messages", version)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise invalid_type("messages", "an array of objects", messages)
    if not messages:
        raise wire_errors.invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.", "messages", "empty_array",
        )
    if reasoning:
        _check_reasoning(body, model)
    _check_common(body, version)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not version.at_least(
        "2024-08-01"
    ):
        raise wire_errors.invalid_request(
            "Invalid parameter: 'response_format' must be one of 'json_object', 'text'.",
            "response_format",
        )


def _check_reasoning(body: Mapping[str, Any], model: str) -> None:
    if "max_tokens" in body:
        raise wire_errors.invalid_request(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    sampling = _sampling_allowed(body, model)
    if model.startswith("gpt-5") and "temperature" in body and not sampling:
        _check_default_temperature(body["temperature"])
    for name in _REASONING_UNSUPPORTED:
        if sampling and name in _NO_REASONING_SAMPLING:
            continue
        if name in body and not (name == "temperature" and model.startswith("gpt-5")):
            raise wire_errors.invalid_request(
                f"Unsupported parameter: '{name}' is not supported with this model.",
                name,
                "unsupported_parameter",
            )


def _sampling_allowed(body: Mapping[str, Any], model: str) -> bool:
    """gpt-5.1 and later reason only when asked: at `reasoning_effort` none, their default,
    they take temperature, top_p and logprobs as a chat model does (BerriAI/litellm#17011,
    vercel/ai#10940, langchain-ai/langchain#35424); their -pro models always reason."""
    return (_LATER_GPT5.match(model) is not None and "-pro" not in model
            and body.get("reasoning_effort", "none") == "none")


def _check_default_temperature(value: object) -> None:
    """The gpt-5 family takes `temperature` at its default only: "Unsupported value:
    'temperature' does not support 0.5 with this model. Only the default (1) value is
    supported." (ChatGPTNextWeb/NextChat#6604 on gpt-5-mini, BerriAI/litellm#13397 on
    gpt-5, microsoft/vscode#323110), code `unsupported_value`; 1 itself passes."""
    if value == 1 and not isinstance(value, bool):
        return
    raise wire_errors.invalid_request(
        f"Unsupported value: 'temperature' does not support {_number_text(value)} with this "
        "model. Only the default (1) value is supported.", "temperature", "unsupported_value",
    )


def _number_text(value: object) -> str:
    """A number as Azure's messages write it: 0.0 as `0`, 1e-08 as `1E-8` (.NET's way)."""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        mantissa, _, exponent = repr(value).partition("e")
        return f"{mantissa}E{int(exponent)}" if exponent else mantissa
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


def check_completions(body: Mapping[str, Any], version: ApiVersion) -> None:
    reject_unknown(body, COMPLETION_PARAMS, version)
    prompt = body.get("prompt", "<|endoftext|>")
    if not isinstance(prompt, str | list):
        raise invalid_type("prompt", "a string or array", prompt)
    _check_common(body, version)


def check_embeddings(body: Mapping[str, Any], version: ApiVersion) -> None:
    reject_unknown(body, EMBEDDING_PARAMS, version)
    if "input" not in body:
        raise missing("input", version)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid_value("encoding_format", fmt, ("float", "base64"))


def invalid_value(name: str, value: object, supported: tuple[str, ...]) -> wire_errors.AzureError:
    """Azure's 400 for a value outside a field's list: "Supported values are: 'a', 'b',
    and 'c'." (two: "'a' and 'b'")."""
    quoted = [f"'{each}'" for each in supported]
    listed = (" and ".join(quoted) if len(quoted) <= 2
              else ", ".join(quoted[:-1]) + ", and " + quoted[-1])
    return wire_errors.invalid_request(
        f"Invalid value: '{value}'. Supported values are: {listed}.", name, "invalid_value")


def _check_common(body: Mapping[str, Any], version: ApiVersion) -> None:
    for name in ("max_tokens", "max_completion_tokens", "n", "seed"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise invalid_type(name, "an integer", value)
    n = body.get("n")
    if isinstance(n, int) and n > 128:
        raise wire_errors.invalid_request(
            f"Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} "
            "instead.", "n", "integer_above_max_value",
        )
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if isinstance(value, int) and value < 1:
            raise wire_errors.invalid_request(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.", name, "integer_below_min_value",
            )
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise invalid_type("stream", "a boolean", body["stream"])
    options = body.get("stream_options")
    if options is not None and not body.get("stream"):
        raise wire_errors.invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options", "invalid_value" if version.new_error_shape else None,
        )


def check_context(
    prompt_tokens: int, body: Mapping[str, Any], window: int | None, *, chat: bool,
    most_input: int | None = None,
) -> None:
    """Azure's 400 `context_length_exceeded` when the prompt and the completion asked for
    do not fit the model's `window`. Chat's words (azure-sdk-for-net#41892,
    azure-search-openai-demo#1199, gpt-researcher#680 on gpt-4o): "you requested N tokens
    (P in the messages, C in the completion)", or without a maximum "your messages resulted
    in P tokens"; legacy completions' older words, code and param null (llama_index#402):
    "(P in your prompt; C for the completion)". A prompt past `most_input` (gpt-5's
    272,000) is refused whatever the completion (cline#5474's words)."""
    if most_input is not None and prompt_tokens > most_input:
        raise wire_errors.invalid_request(
            f"Input tokens exceed the configured limit of {most_input} tokens. Your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
            "messages", "context_length_exceeded",
        )
    if window is None:
        return
    most = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = most if isinstance(most, int) and not isinstance(most, bool) else 0
    if not chat and body.get("max_tokens") is None:
        completion = 16  # completions' default maximum
    if prompt_tokens + completion <= window:
        return
    head = f"This model's maximum context length is {window} tokens"
    if not chat:
        message = (f"{head}, however you requested {prompt_tokens + completion} tokens "
                   f"({prompt_tokens} in your prompt; {completion} for the completion). "
                   "Please reduce your prompt; or completion length.")
        raise wire_errors.invalid_request(message)
    if completion:
        message = (f"{head}. However, you requested {prompt_tokens + completion} tokens "
                   f"({prompt_tokens} in the messages, {completion} in the completion). "
                   "Please reduce the length of the messages or completion.")
    else:
        message = (f"{head}. However, your messages resulted in {prompt_tokens} tokens. "
                   "Please reduce the length of the messages.")
    raise wire_errors.invalid_request(message, "messages", "context_length_exceeded")


def check_max_tokens(body: Mapping[str, Any], most: int | None) -> None:
    """Azure's 400 when `max_tokens` asks for more than the model can write: "max_tokens is
    too large: 20000. This model supports at most 16384 completion tokens, whereas you
    provided 20000." (charmbracelet/catwalk#41 on gpt-4o, gpt-4o-mini, gpt-4.1;
    stanfordnlp/dspy#8724 on gpt-5-chat)."""
    asked = body.get("max_tokens")
    if most is None or not isinstance(asked, int) or isinstance(asked, bool) or asked <= most:
        return
    raise wire_errors.invalid_request(
        f"max_tokens is too large: {asked}. This model supports at most {most} completion "
        f"tokens, whereas you provided {asked}.", "max_tokens", "invalid_value",
    )

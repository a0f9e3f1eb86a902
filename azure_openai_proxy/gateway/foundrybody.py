"""What a Foundry deployment (`api: foundry`, Azure AI model inference) is sent of an
OpenAI client's body.

The model inference API checks a body against its own schema (chat: `messages`,
`model`, `frequency_penalty`, `presence_penalty`, `temperature`, `top_p`, `max_tokens`,
`response_format`, `stop`, `stream`, `tools`, `tool_choice`, `seed`, `modalities`;
embeddings: `input`, `model`, `dimensions`, `encoding_format`, `input_type`) and, unless
the request's `extra-parameters` header says `drop` or `pass-through`, refuses any other
key: 400 "Extra parameters ['user'] are not allowed when extra-parameters is not set or
set to be 'error'". OpenAI's SDKs send some of those keys as a matter of course
(`user`, `parallel_tool_calls`, `store`...), so `fit_foundry_body` fits the body first:

- a parameter that only labels or hints (`user`, `store`, `metadata`, a prompt cache
  key...) is dropped, noted in `x-proxy-adapted`: the answer means the same;
- one whose loss the client would not see (`n` past 1, `logprobs`, `logit_bias`,
  `functions`, `audio`, `data_sources`...) is the gateway's 400 `unsupported_parameter`
  naming it, before Azure;
- a client that sends the `extra-parameters` header itself (`error`, `drop` or
  `pass-through`: Foundry's values; another is a 400) has chosen: its body goes as it
  came and the header is relayed.

Messages are fitted too, header or not (`_fit_messages`): a `developer` message becomes
a `system` one, and an assistant message's tool calls lose the `index` a client copied
from a stream's deltas; the API's partner models refuse both.

Keys no OpenAI API defines (a Llama's `top_k`...) are left as they came: Foundry's own
400 names them (normalize/upstream_errors.py), and the header lets them through.
`max_completion_tokens`, `reasoning_effort` and `stream_options` are compat.py's, by the
deployment's api-version and model family, and not judged here.
"""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.errors import InvalidRequest, UnsupportedParameter

__all__ = ["EXTRA_PARAMETERS_HEADER", "fit_foundry_body"]

EXTRA_PARAMETERS_HEADER = "extra-parameters"
_OPTIONS = ("error", "drop", "pass-through")
_HINTS = ("user", "store", "metadata", "parallel_tool_calls", "service_tier",
          "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
          "user_security_context", "prediction", "verbosity")
_DROPPED: dict[str, frozenset[str]] = {
    "chat/completions": frozenset(_HINTS),
    "embeddings": frozenset({"user"}),
}
_REFUSED: dict[str, frozenset[str]] = {
    "chat/completions": frozenset({"n", "logprobs", "top_logprobs", "logit_bias",
                                   "functions", "function_call", "audio", "data_sources",
                                   "web_search_options"}),
    "embeddings": frozenset(),
}
_JUDGED = {operation: _DROPPED[operation] | _REFUSED[operation] for operation in _DROPPED}


def fit_foundry_body(
    body: dict[str, Any], operation: str, option: str | None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The body to send (the input itself when nothing is dropped; never mutated) and
    one note per dropped parameter. `option` is the client's `extra-parameters` header."""
    if option is not None:
        if option not in _OPTIONS:
            raise InvalidRequest(
                f"The {EXTRA_PARAMETERS_HEADER} header must be one of {', '.join(_OPTIONS)} "
                "(Azure AI model inference's values).", param=EXTRA_PARAMETERS_HEADER)
        fitted: tuple[dict[str, Any], tuple[str, ...]] = body, ()
    else:
        fitted = _fit_parameters(body, operation)
    if operation == "chat/completions":
        return _fit_messages(*fitted)
    return fitted


def _fit_parameters(
    body: dict[str, Any], operation: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    judged = _JUDGED.get(operation)
    if judged is None or judged.isdisjoint(body):
        return body, ()
    out = dict(body)
    notes: list[str] = []
    for name in [name for name in body if name in judged]:
        if name in _REFUSED[operation] and not _unused(name, body[name]):
            raise UnsupportedParameter(
                f"The parameter '{name}' is not supported by this model's deployment (Azure "
                "AI Foundry model inference, which refuses parameters its API does not "
                f"define). Send the header '{EXTRA_PARAMETERS_HEADER}: pass-through' to "
                "give it to the model as it is.", param=name)
        del out[name]
        notes.append(f"dropped:{name}")
    return out, tuple(notes)


def _fit_messages(
    body: dict[str, Any], notes: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """`body` with its messages in the shape the model inference API's models take:

    - a `developer` message becomes a `system` one: OpenAI's newer name for it (its SDKs
      and apps send it), which DeepSeek-R1, Llama, Mistral... refuse with 422 (Cherry
      Studio#12321, its fix #12328); OpenAI's own models there read either alike;
    - an assistant message's tool calls lose the `index` a client copied from a stream's
      deltas (the OpenAI SDK's stream helper, Vercel's AI SDK): no request schema has it,
      and Mistral's models refuse it (mistral-common's extra_forbidden, "unknown field:
      parameter index is not a valid field" on Azure AI, which LiteLLM retries without).
    """
    messages = body.get("messages")
    if type(messages) is not list:
        return body, notes
    developer = indexed = False
    for message in messages:
        if type(message) is dict:
            developer = developer or message.get("role") == "developer"
            indexed = indexed or _indexed(message)
    if not (developer or indexed):
        return body, notes
    cleaned = [_fit_message(message) for message in messages]
    fitted = (("developer->system",) if developer else ()) + (
        ("dropped:messages.tool_calls.index",) if indexed else ())
    return {**body, "messages": cleaned}, (*notes, *fitted)


def _fit_message(message: Any) -> Any:
    if type(message) is not dict:
        return message
    if message.get("role") == "developer":
        return {**message, "role": "system"}
    if _indexed(message):
        return {**message, "tool_calls": [
            {key: value for key, value in call.items() if key != "index"}
            if type(call) is dict else call for call in message["tool_calls"]]}
    return message


def _indexed(message: dict[str, Any]) -> bool:
    calls = message.get("tool_calls")
    return type(calls) is list and any(type(call) is dict and "index" in call
                                       for call in calls)


def _unused(name: str, value: Any) -> bool:
    """A value that asks for nothing (`n: 1`, `logprobs: false`, `null`, `{}`, `[]`)."""
    return (value is None or value is False or value == [] or value == {}
            or (name == "n" and value == 1 and value is not True))

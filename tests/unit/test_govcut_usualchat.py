"""`usual_chat_tokens`, `_usual_chat`'s body checks in one frame, against the general
functions it stands for: `PLAIN_CHAT_NAMES`, the `store` value, `plain_messages_chars`
and `request_estimate` (the composition `_usual_chat` made before), and, for a body of
plain messages, the general walks `prompt_tokens` and `max_output_tokens`."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.affinity import MAX_REFERENCE_VALUES
from azure_openai_proxy.gateway.governed import (
    PLAIN_CHAT_NAMES,
    plain_messages_chars,
    request_estimate,
)
from azure_openai_proxy.gateway.usualchat import usual_chat_tokens
from azure_openai_proxy.governance.estimate import max_output_tokens, prompt_tokens

_DEFAULT = 4096
_TEXT = st.text(max_size=40)  # any Unicode: ASCII and not
_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                   _TEXT, st.lists(st.integers(0, 3), max_size=2),
                   st.dictionaries(_TEXT, st.integers(-5, 10**6), max_size=2))
_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                           "content": _TEXT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": _VALUE}),
    st.fixed_dictionaries({"role": st.just("user"), "content": _TEXT, "name": _TEXT}),
    st.fixed_dictionaries({"content": _TEXT, "kind": _TEXT}),
    st.fixed_dictionaries({"role": st.just("user")}),
    _VALUE,
)
_NAMES = st.sampled_from([*sorted(PLAIN_CHAT_NAMES), "n", "input", "prompt", "instructions",
                          "best_of", "response_format", "tools", "Model", "data_sources"])
_BODY = st.builds(
    lambda messages, extra, most: {**extra, **({"messages": messages} if messages is not None
                                             else {}), **most},
    st.one_of(st.none(), st.lists(_MESSAGE, max_size=4), _VALUE),
    st.dictionaries(_NAMES, _VALUE, max_size=4),
    st.one_of(st.just({}), st.fixed_dictionaries({"max_tokens": st.integers(-3, 10**5)})),
)


def composed(json: dict[str, Any]) -> int:
    """What `_usual_chat` computed before, with the general functions, step by step."""
    if not PLAIN_CHAT_NAMES.issuperset(json) or ("store" in json and json["store"] is True):
        return -1
    chars = plain_messages_chars(json.get("messages"))
    if chars < 0:
        return -1
    return sum(request_estimate(json, _DEFAULT, "chat/completions", chars)) or 1


@settings(max_examples=600, deadline=None, derandomize=True)
@given(_BODY)
def test_the_one_frame_reads_as_the_composed_functions(json: dict[str, Any]) -> None:
    json = orjson.loads(orjson.dumps(json))  # parsed JSON's own types, as `read_body` gives
    assert usual_chat_tokens(json, _DEFAULT) == composed(json)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user"]),
                                       "content": _TEXT}), max_size=6),
       st.one_of(st.none(), st.integers(0, 10**5)), st.booleans())
def test_a_plain_chat_reserves_what_the_general_walks_count(
        messages: list[dict[str, str]], most: int | None, stored: bool) -> None:
    json: dict[str, Any] = {"model": "gpt-4o", "messages": messages, "store": stored}
    if most is not None:
        json["max_tokens"] = most
    general = prompt_tokens(json) + max_output_tokens(json, _DEFAULT, "chat/completions")
    assert usual_chat_tokens(json, _DEFAULT) == (-1 if stored else max(general, 1))


def test_what_is_not_the_usual_chat_is_told_apart() -> None:
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hé" * 10}],
             "max_tokens": 7}
    assert usual_chat_tokens(plain, _DEFAULT) == 8 + 7  # 30 bytes of UTF-8: 8 tokens
    assert usual_chat_tokens({**plain, "n": 2}, _DEFAULT) == -1
    assert usual_chat_tokens({**plain, "store": True}, _DEFAULT) == -1
    assert usual_chat_tokens({**plain, "store": False}, _DEFAULT) == 8 + 7
    many = [{"role": "user", "content": "x"}] * (MAX_REFERENCE_VALUES + 1)
    assert usual_chat_tokens({**plain, "messages": many}, _DEFAULT) == -1
    assert usual_chat_tokens({**plain, "messages": [{"role": "user", "content": None}]},
                             _DEFAULT) == -1
    assert usual_chat_tokens({"model": "gpt-4o", "messages": [], "max_tokens": 0},
                             _DEFAULT) == 1  # a model runs: 1 at least

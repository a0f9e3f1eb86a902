from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.normalize.body import normalize_answer, normalize_body

SAFE = {"filtered": False, "severity": "safe"}
FILTERS = {"hate": SAFE, "sexual": SAFE, "violence": SAFE, "self_harm": SAFE}
AZURE_CHAT = {
    "choices": [
        {
            "content_filter_results": FILTERS,
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {"content": "Paris.", "role": "assistant"},
        }
    ],
    "created": 1727000000,
    "id": "chatcmpl-A1",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
    "system_fingerprint": "fp_1",
    "usage": {"completion_tokens": 2, "prompt_tokens": 9, "total_tokens": 11},
}
RAW = orjson.dumps(AZURE_CHAT)


def parsed(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(body)
    return out


def test_model_is_restored_and_azure_fields_kept() -> None:
    got = parsed(normalize_body(RAW, client_model="gpt-4o", keep_azure_fields=True))
    assert got == {**AZURE_CHAT, "model": "gpt-4o"}


def test_azure_fields_are_stripped() -> None:
    got = parsed(normalize_body(RAW, client_model=None, keep_azure_fields=False))
    assert "prompt_filter_results" not in got
    assert "content_filter_results" not in got["choices"][0]
    assert got["model"] == "gpt-4o-2024-08-06"
    assert got["choices"][0]["message"] == {"content": "Paris.", "role": "assistant"}


def test_prompt_annotations_variant_is_stripped_too() -> None:
    body = orjson.dumps({**AZURE_CHAT, "prompt_annotations": [{}]})
    got = parsed(normalize_body(body, client_model=None, keep_azure_fields=False))
    assert "prompt_annotations" not in got


def test_image_items_lose_their_filter_results() -> None:
    body = orjson.dumps(
        {
            "created": 1,
            "data": [{"url": "u", "content_filter_results": {}, "prompt_filter_results": {}}],
        }
    )
    got = parsed(normalize_body(body, client_model=None, keep_azure_fields=False))
    assert got["data"] == [{"url": "u"}]


def test_legacy_completion_and_embeddings_get_the_client_model() -> None:
    completion = orjson.dumps(
        {"object": "text_completion", "model": "gpt-35-turbo-instruct", "choices": [{"text": "x"}]}
    )
    embeddings = orjson.dumps({"object": "list", "model": "ada", "data": [{"embedding": [0.1]}]})
    for body in (completion, embeddings):
        assert (
            parsed(normalize_body(body, client_model="client-name", keep_azure_fields=True))[
                "model"
            ]
            == "client-name"
        )


def test_responses_api_body_gets_the_client_model() -> None:
    body = orjson.dumps(
        {"id": "resp_1", "object": "response", "model": "my-deployment", "output": []}
    )
    assert (
        parsed(normalize_body(body, client_model="gpt-4.1", keep_azure_fields=True))["model"]
        == "gpt-4.1"
    )


def test_same_object_returned_when_nothing_asks_for_change() -> None:
    assert normalize_body(RAW, client_model=None, keep_azure_fields=True) is RAW


def test_same_object_returned_when_model_already_matches_and_fields_kept() -> None:
    body = orjson.dumps({**AZURE_CHAT, "model": "gpt-4o"})
    assert normalize_body(body, client_model="gpt-4o", keep_azure_fields=True) is body


def test_same_object_returned_when_there_is_nothing_to_strip() -> None:
    body = orjson.dumps({"object": "list", "data": [{"embedding": [1.0]}]})
    assert normalize_body(body, client_model="x", keep_azure_fields=False) is body


def test_a_body_without_model_gets_no_model_added() -> None:
    body = b'{"object":"list","data":[]}'
    assert normalize_body(body, client_model="x", keep_azure_fields=True) is body
    assert normalize_body(body, client_model="x", keep_azure_fields=False) is body


@pytest.mark.parametrize("junk", [b"", b"not json", b"[1,2]", b"null", b'{"model": 1', b"\xff\xfe"])
def test_junk_comes_back_unchanged(junk: bytes) -> None:
    assert normalize_body(junk, client_model="x", keep_azure_fields=False) is junk


@given(st.binary(max_size=200), st.sampled_from([None, "m"]), st.booleans())
def test_never_raises(body: bytes, model: str | None, keep: bool) -> None:
    assert isinstance(normalize_body(body, client_model=model, keep_azure_fields=keep), bytes)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["model", "choices", "data", "prompt_filter_results", "x"]), _json
    )
)
def test_any_json_object_normalizes_idempotently(obj: dict[str, Any]) -> None:
    body = orjson.dumps(obj)
    once = normalize_body(body, client_model="m", keep_azure_fields=False)
    assert normalize_body(once, client_model="m", keep_azure_fields=False) is once


@given(
    st.dictionaries(st.sampled_from(["model", "choices", "usage", "id", "x"]), _json),
    st.text(max_size=12),
    st.booleans(),
)
def test_the_answer_gets_the_client_model_and_its_usage_is_read(
    obj: dict[str, Any], model: str, spaced: bool
) -> None:
    """Whatever the rest of the answer holds and however it is spaced, only the
    top-level `model` changes, and the usage is the answer's."""
    obj = {**obj, "model": model}
    body = orjson.dumps(obj)
    if spaced:  # another encoder's spacing
        body = json.dumps(obj).encode()
    out, usage = normalize_answer(body, client_model="client-name", keep_azure_fields=True)
    assert orjson.loads(out) == {**obj, "model": "client-name"}
    assert usage == (obj["usage"] if isinstance(obj.get("usage"), dict) and b'"usage"' in body else None)


def test_only_the_top_level_model_is_restored() -> None:
    obj = {"choices": [{"message": {"content": 'say "model":"gpt-4o" please'}}],
           "model": "gpt-4o", "note": {"model": "gpt-4o"}}
    out, _ = normalize_answer(orjson.dumps(obj), client_model="mine", keep_azure_fields=True)
    assert orjson.loads(out) == {**obj, "model": "mine"}  # the nested one is left alone


def test_values_the_gateway_does_not_change_go_back_byte_for_byte() -> None:
    """Only the top-level `model` is re-encoded: a number no float can hold, Azure's
    spacing and escapes inside other values reach the client as Azure sent them."""
    body = (b'{"model":"gpt-4o-2024-08-06","choices":[{"message": {"content": "caf\\u00e9"}}],'
            b'"seed":123456789012345678901234567890}')
    out, _ = normalize_answer(body, client_model="gpt-4o", keep_azure_fields=True)
    assert out == (b'{"model":"gpt-4o","choices":[{"message": {"content": "caf\\u00e9"}}],'
                   b'"seed":123456789012345678901234567890}')


@pytest.mark.parametrize("body", [
    b'{"model":"gpt-4o-2024-08-06","usage":{"total_tokens":1e400}}',  # no float holds it
    b'{"model":"gpt-4o-2024-08-06","usage":{"note":"\xff"}}',  # invalid UTF-8 in what is read
    b'{"\xff":1,"model":"gpt-4o-2024-08-06"}',
    b'{"model":"\xff"}',
    b'{"model":"gpt-4o-2024-08-06","x":' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
])
def test_answers_the_decoder_cannot_take_go_back_unchanged(body: bytes) -> None:
    assert normalize_answer(body, client_model="gpt-4o", keep_azure_fields=True) == (body, None)


def test_a_token_count_past_64_bits_is_read_as_a_float_as_everywhere_else() -> None:
    """The access line and the metrics take any float; a 100-bit int they could not."""
    body = b'{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":123456789012345678901234567890}}'
    out, usage = normalize_answer(body, client_model="gpt-4o", keep_azure_fields=True)
    assert usage == {"prompt_tokens": 1.2345678901234568e29}
    assert out == body.replace(b"gpt-4o-2024-08-06", b"gpt-4o")

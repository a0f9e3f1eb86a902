"""`repeats_a_key` against a reference parser that keeps every pair, and when a checked
body is re-encoded (`RequestBody.canonical`): always when small, for a large one only
when its bytes repeat a key or that could not be told within the budget
(`LargeRequestBody`, which `read_body` makes of such a body)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.requestbody import LargeRequestBody, RequestBody, repeats_a_key

UNLIMITED = 10**9


class _Repeated(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Repeated
    return dict(pairs)


def reference(raw: bytes) -> bool:
    """The stdlib's parser, handed every pair of every object."""
    try:
        json.loads(raw, object_pairs_hook=_pairs)
    except _Repeated:
        return True
    return False


# JSON text built by hand from pairs, so that objects may repeat a key, spelled with
# any escapes and spacing a client may use.
_TEXT = st.text(alphabet=st.sampled_from('ab"\\:{}[],\n é\u2028\x00/'), max_size=8)
_SPACE = st.sampled_from(["", " ", "\n\t ", "\r\n"])


@st.composite
def _string(draw: st.DrawFn, text: st.SearchStrategy[str] = _TEXT) -> str:
    value = draw(text)
    encoded = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()) and value == "a":
        encoded = '"\\u0061"'  # the same key, escaped where it need not be
    return encoded


def _document(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    members = st.lists(st.tuples(_string(st.sampled_from(["a", "b", 'c"', "d\\", "é"])),
                                 _SPACE, children), max_size=4)
    obj = st.builds(lambda ms, sp: "{" + sp + ",".join(
        f"{name}{space}:{space}{value}" for name, space, value in ms) + sp + "}",
        members, _SPACE)
    arr = st.builds(lambda items, sp: "[" + sp + ("," + sp).join(items) + "]",
                    st.lists(children, max_size=4), _SPACE)
    return obj | arr


_VALUES = st.recursive(
    _string() | st.sampled_from(["1", "-2.5e3", "true", "false", "null"]),
    _document, max_leaves=20)
_OBJECTS = st.builds(lambda members: "{" + ",".join(f"{k}:{v}" for k, v in members) + "}",
                     st.lists(st.tuples(_string(st.sampled_from(["a", "b", "model"])),
                                        _VALUES), max_size=5))


# Its examples are slow to draw (recursive documents): 600 took 25-70 s at a load of 12
# on two cores, past pytest-timeout's 60 s, whose Failed raised inside Hypothesis was
# read as a flaky test ("unreliable results", "inconsistent data generation").
# The slow step (.ci/run runs it): the suite's heaviest CPU run, 43 s of a full run at a
# load of 11.
@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(max_examples=600, deadline=None)
@given(_OBJECTS)
def test_it_agrees_with_a_parser_that_keeps_every_pair(text: str) -> None:
    raw = text.encode()
    orjson.loads(raw)  # valid JSON, as every body it is asked about
    assert repeats_a_key(raw, UNLIMITED) is reference(raw)


@pytest.mark.parametrize(("raw", "repeated"), [
    (b'{"a": 1, "b": {"a": 2}}', False),  # one key per object
    (b'{"a": 1, "a" : 2}', True),
    (b'{"a": 1, "\\u0061": 2}', True),  # the same key, escaped
    (b'{"x": "\\"a\\":", "a": 1}', False),  # a value that looks like a key
    (b'{"x": "\\\\", "a": 1, "x\\\\": 2}', False),  # a string that ends in a backslash
    (b'{"x": ["a", "a"], "y": [{"a": 1}, {"a": 2}]}', False),  # arrays hold no keys
    (b'{"m": [{"c": [{"t": "file", "f": 1, "f": 2}]}]}', True),  # deep
    (b'{"a": {"b": 1}, "b": 2, "a": 3}', True),  # after a nested object closes
])
def test_cases(raw: bytes, repeated: bool) -> None:
    assert repeats_a_key(raw, UNLIMITED) is repeated is reference(raw)


def test_it_says_none_past_its_budget_or_a_long_run_of_backslashes() -> None:
    raw = orjson.dumps({"messages": [{"role": "user", "content": str(n)} for n in range(50)]})
    assert repeats_a_key(raw, 1000) is False
    assert repeats_a_key(raw, 50) is None
    backslashes = orjson.dumps({"a": "\\" * 100 + '"', "b": 1})
    assert repeats_a_key(backslashes, UNLIMITED) is None
    assert repeats_a_key(orjson.dumps({"a": "\\" * 20 + '"', "a\\": 1}), UNLIMITED) is False


def _body(raw: bytes) -> RequestBody:
    """As `read_body` makes it: a body of 1 MiB or more is a `LargeRequestBody`."""
    kind = LargeRequestBody if len(raw) >= 1024 * 1024 else RequestBody
    return kind(orjson.loads(raw), raw)


IMAGE = "data:image/png;base64," + "QUJD" * 300_000  # 1.2 MB, as a base64 data URL


def test_a_checked_body_is_sent_as_parsed_when_small() -> None:
    body = _body(b'{"model": "gpt-4o", "input": "hi"}')
    assert body.canonical is False
    body.canonical = True
    assert body.canonical is True


def test_a_large_body_that_repeats_no_key_is_sent_as_it_came() -> None:
    raw = orjson.dumps({"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is in this image?\nSay \"it\"."},
        {"type": "input_image", "image_url": IMAGE}]}]})
    body = _body(raw)
    body.canonical = True
    assert body.canonical is False


def test_a_large_body_that_repeats_a_key_is_sent_as_parsed() -> None:
    raw = (b'{"model": "gpt-4o", "previous_response_id": "resp_other", "input": "'
           + IMAGE.encode() + b'", "previous_response_id": null}')
    body = _body(raw)
    body.canonical = True
    assert body.canonical is True
    body.canonical = False
    assert body.canonical is False


def test_a_large_body_of_many_small_strings_is_sent_as_parsed() -> None:
    """Proving it would cost more than re-encoding it: the budget runs out."""
    raw = orjson.dumps({"input": [{"role": "user", "content": f"line {n}"}
                                  for n in range(40_000)]})
    assert len(raw) > 1024 * 1024
    body = _body(raw)
    body.canonical = True
    assert body.canonical is True


def test_escaped_quotes_count_against_the_budget() -> None:
    """Each escaped quote in a string is a step: a body of them is not walked to its end
    past the budget (before, 10 MB of `\\"` held the event loop for seconds)."""
    raw = b'{"messages": [{"role": "user", "content": "' + b'\\"' * 600_000 + b'"}]}'
    orjson.loads(raw)
    calls = 0
    real_find = bytes.find

    class Counted(bytes):
        def find(self, *args: Any) -> int:  # type: ignore[override]
            nonlocal calls
            calls += 1
            return real_find(self, *args)

    assert repeats_a_key(Counted(raw), len(raw) >> 14) is None
    assert calls <= len(raw) >> 14
    assert repeats_a_key(raw, UNLIMITED) is False  # with the steps to spare: told

"""`keys_spelled_once`: a governed usual chat's bytes are sent as they came only when no
key can be repeated in them (else re-encoded, as every such body was before: session
14's rule, so that Azure reads the values the gateway checked). Held against a parser
that keeps every pair, over chat bodies written by hand from pairs, with keys repeated,
spelled with escapes, spaced as clients space them, and string values that spell a key."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.governed import PLAIN_CHAT_NAMES, PLAIN_CHAT_QUOTED
from azure_openai_proxy.gateway.requestbody import keys_spelled_once
from tests.unit.test_requestbody import reference

_SPACE = st.sampled_from(["", " ", "\n  ", "\t"])
_NAMES = ["model", "messages", "max_tokens", "temperature", "user", "stream", "store",
          "n", "role", "content"]


@st.composite
def _name(draw: st.DrawFn, names: list[str]) -> str:
    """A key as a client may spell it: plain, or one letter escaped (`\\u006d`)."""
    name = draw(st.sampled_from(names))
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(name) - 1))
        return '"' + name[:at] + f"\\u{ord(name[at]):04x}" + name[at + 1:] + '"'
    return json.dumps(name)


# Strings that may spell a key, quoted or escaped, or a role's usual values.
_TEXT = st.sampled_from(["hi", "user", "system", "model", '"model"', '"max_tokens":9',
                         "content", '"content"', "a\nb", "\\", "é", "role"])
_STRING = _TEXT.map(json.dumps)
_SCALAR = _STRING | st.sampled_from(["5", "64", "0.2", "true", "false", "null"])


def _object(members: st.SearchStrategy[list[tuple[str, str]]]) -> st.SearchStrategy[str]:
    return st.builds(lambda ms, sp: "{" + sp + ("," + sp).join(
        f"{name}{sp}:{sp}{value}" for name, value in ms) + sp + "}", members, _SPACE)


def _members(usual: list[tuple[str, st.SearchStrategy[str]]], names: list[str],
             values: st.SearchStrategy[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Mostly the usual members, each once; now and then one more (a name repeated,
    perhaps spelled with an escape), in any order."""
    fixed = st.tuples(*(st.tuples(st.just(json.dumps(name)), value) for name, value in usual))
    extra = st.lists(st.tuples(_name(names), values), max_size=1)
    return st.builds(lambda a, b: [*a, *b], fixed, extra).flatmap(st.permutations)


_MESSAGE = _object(_members([("role", _STRING), ("content", _STRING)],
                            ["role", "content", "name"], _STRING))
_MESSAGES = st.builds(lambda items, sp: "[" + ("," + sp).join(items) + "]",
                      st.lists(_MESSAGE, max_size=3), _SPACE)
_OPTIONS = _object(st.lists(st.tuples(_name(["include_usage", "a"]), _SCALAR), max_size=2))
_BODIES = st.sampled_from(_NAMES[2:]).flatmap(lambda other: _object(_members(
    [("model", _STRING), ("messages", _MESSAGES), (other, _SCALAR | _OPTIONS)],
    _NAMES, _SCALAR | _MESSAGES | _OPTIONS)))


def _usual_shape(body: dict[str, Any]) -> bool:
    """What `Gateway._usual_chat` checks of the messages beside this: objects of exactly
    a `role` and a string `content` (`plain_messages_chars`)."""
    messages = body.get("messages")
    return type(messages) is list and all(
        type(m) is dict and len(m) == 2 and "role" in m and type(m.get("content")) is str
        for m in messages)


@settings(max_examples=400, deadline=None)
@given(_BODIES)
def test_bytes_are_kept_only_when_no_key_is_repeated(text: str) -> None:
    raw = text.encode()
    parsed = orjson.loads(raw)
    once = keys_spelled_once(raw, PLAIN_CHAT_QUOTED, parsed)
    # None exactly where the set test it replaced (`issuperset`) said not a plain chat
    assert (once is None) is (not PLAIN_CHAT_NAMES.issuperset(parsed))
    if once and _usual_shape(parsed):  # no object anywhere names a key twice, but `user`
        assert _repeats_but_user(raw) is False  # (no rule reads it: `PLAIN_CHAT_QUOTED`)


class _Repeated(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs if name != "user"]
    if len(set(names)) != len(names):
        raise _Repeated
    return dict(pairs)


def _repeats_but_user(raw: bytes) -> bool:
    """The stdlib's parser, handed every pair of every object: a name but `user` twice."""
    try:
        json.loads(raw, object_pairs_hook=_pairs)
    except _Repeated:
        return True
    return False


@pytest.mark.parametrize("raw", [
    b'{"model":"gpt-4o","max_tokens":9000,"messages":[{"role":"user","content":"hi"}],'
    b'"max_tokens":5}',
    b'{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"long",'
    b'"content":"hi"}]}',
    b'{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"long",'
    b'"cont\\u0065nt":"hi"}]}',
    b'{"model":"gpt-4o","max_tok\\u0065ns":9000,"max_tokens":5,"messages":[]}',
    b'{"model":"gpt-4o","max_tokens":5,"stream_options":{"include_usage":false,'
    b'"include_usage":true},"messages":[{"role":"user","content":"hi"}]}',
])
def test_a_repeated_key_however_spelled_is_not_sent_as_it_came(raw: bytes) -> None:
    assert reference(raw) is True
    assert keys_spelled_once(raw, PLAIN_CHAT_QUOTED, orjson.loads(raw)) is False


@pytest.mark.parametrize("dumps", [
    orjson.dumps, json.dumps, lambda body: json.dumps(body, indent=2).encode()])
def test_the_usual_chat_as_clients_write_it_is_sent_as_it_came(dumps: Any) -> None:
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "Answer in two sentences."},
        {"role": "user", "content": "Where is my parcel?\nIt was due on Tuesday."}],
        "temperature": 0.2, "max_tokens": 64, "user": "bench-user-1", "stream": False}
    raw = dumps(body)
    raw = raw if isinstance(raw, bytes) else raw.encode()
    assert keys_spelled_once(raw, PLAIN_CHAT_QUOTED, orjson.loads(raw)) is True
    # a value that spells a key's quoted name, or any \\u escape: re-encoded instead
    spelled = {**body, "user": "model"}
    assert keys_spelled_once(orjson.dumps(spelled), PLAIN_CHAT_QUOTED, spelled) is False
    escaped = json.dumps({**body, "user": "é"}).encode()  # ensure_ascii: \u00e9
    assert keys_spelled_once(escaped, PLAIN_CHAT_QUOTED, orjson.loads(escaped)) is False

"""Session 19's review of the batch file's check (gateway/batchcheck.py): a line nested
deeper than the standard library's parser goes was a 500; a file's lines were all made
before the first was judged; a huge line was parsed by two parsers holding the GIL."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway import batchcheck
from azure_openai_proxy.gateway.batchcheck import MAX_BATCH_LINE_BYTES, batch_file_models

_GOOD = (b'{"custom_id":"1","method":"POST","url":"/chat/completions",'
         b'"body":{"model":"gpt-4o-mini","messages":[]}}')


def test_a_line_nested_deeper_than_the_standard_parser_reads_is_not_checkable() -> None:
    for depth in (1000, 1010, 1020):  # orjson reads up to 1,023 levels
        deep = b"[" * depth + b"]" * depth
        line = _GOOD.replace(b'"messages":[]', b'"messages":[],"x":' + deep + b',"model":"o3-mini"')
        assert batch_file_models(line) is None
        # without a repeat the fast path never parses it again
        assert batch_file_models(_GOOD.replace(b'"messages":[]', b'"x":' + deep)) == {
            "gpt-4o-mini"}


def test_a_file_s_lines_are_read_one_at_a_time() -> None:
    content = b"{}\n" * 2_000_000  # refused at its first line
    tracemalloc.start()
    try:
        assert batch_file_models(content) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # splitlines made 2,000,000 objects: ~70 MB


def test_a_lone_carriage_return_still_ends_a_line() -> None:
    assert batch_file_models(_GOOD + b"\r" + _GOOD.replace(b'"1"', b'"2"')) == {"gpt-4o-mini"}
    split = _GOOD.replace(b',"method"', b',\r"method"')  # two halves, neither JSON
    assert batch_file_models(split) is None


def test_a_line_past_the_bound_is_not_judged() -> None:
    padding = b" " * (MAX_BATCH_LINE_BYTES - len(_GOOD) + 1)
    assert batch_file_models(_GOOD[:-1] + padding + b"}") is None
    assert batch_file_models(_GOOD[:-1] + padding[:-1] + b"}") == {"gpt-4o-mini"}


def _exact(line: bytes) -> bool:
    """The exact reading alone: `body` or `model` given twice in some object."""
    def hook(pairs: list[tuple[str, Any]]) -> None:
        names = [n for n, _ in pairs]
        if names.count("body") > 1 or names.count("model") > 1:
            raise KeyError
    try:
        json.loads(line, object_pairs_hook=hook)
    except KeyError:
        return True
    return False


_NAMES = st.sampled_from(["body", "model", "Model", "x", "messages", "bo", "y"])
_SPELL = st.sampled_from([
    lambda n: n, lambda n: "".join(f"\\u{ord(c):04x}" for c in n),
    lambda n: "".join(f"\\u{ord(c):04X}" for c in n),
    lambda n: n[:1] + "".join(f"\\u{ord(c):04x}" for c in n[1:])])


@st.composite
def _objects(draw: st.DrawFn, depth: int = 0) -> str:
    members = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(_SPELL)(draw(_NAMES))
        value = (draw(_objects(depth + 1)) if depth < 2 and draw(st.booleans())
                 else draw(st.sampled_from(['"body"', '"model"', "1", '"\\u0062"'])))
        members.append(f'"{name}":{value}')
    return "{" + ",".join(members) + "}"


@settings(max_examples=400, deadline=None)
@given(_objects())
def test_the_bytes_shortcut_agrees_with_the_exact_reading(text: str) -> None:
    line = text.encode()
    assert batchcheck._repeats_a_name(line) == _exact(line), line


# Session 19's second review: a line of many small values (`[],[],...`) parsed to ~33
# times its size; the previous line's objects lived on while the next was parsed.
_HEAD = (b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":'
         b'{"model":"gpt-4o-mini","messages":[],"x":[')


def _many(size: int) -> bytes:
    return _HEAD + b",".join([b"[]"] * ((size - len(_HEAD)) // 3)) + b"]}}"


def _peak(content: bytes) -> tuple[frozenset[str] | None, int]:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        models = batch_file_models(content)
        return models, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_line_of_too_many_values_is_not_parsed() -> None:
    line = _many(MAX_BATCH_LINE_BYTES - 16)
    models, peak = _peak(line)
    assert models is None
    assert peak < 2 * len(line), peak / 2**20  # its copy, not its objects (~530 MiB)


def test_a_line_s_objects_are_let_go_before_the_next_is_parsed() -> None:
    line = _many(300_000)  # under the count: parsed
    one, peak_one = _peak(line)
    two, peak_two = _peak(line + b"\n" + line.replace(b'"1"', b'"2"'))
    assert one == two == {"gpt-4o-mini"}
    assert peak_two < peak_one * 1.2, (peak_one / 2**20, peak_two / 2**20)

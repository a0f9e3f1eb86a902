"""A batch file's line is judged by its `body.model` (a key with an allow-list may make a
batch only from lines naming models it may use): a line that also spells `Model` or
`Body` in other letters, or gives a name twice, cannot be judged (orjson keeps the last
of a repeated name; Azure's batch runner may bind another spelling or the first), so
the file's models are unknown and a batch from it is refused to such a key."""

from __future__ import annotations

import pytest

from azure_openai_proxy.gateway.batchcheck import batch_file_models

_GOOD = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}}'


def test_a_plain_file_names_its_models() -> None:
    other = _GOOD.replace(b'"1"', b'"2"').replace(b"gpt-4o-mini", b"gpt-4o")
    assert batch_file_models(_GOOD + b"\n" + other + b"\n") == frozenset(
        {"gpt-4o-mini", "gpt-4o"})


@pytest.mark.parametrize("line", [
    _GOOD.replace(b'"model":"gpt-4o-mini"', b'"model":"gpt-4o-mini","Model":"o3-mini"'),
    _GOOD.replace(b'"model":"gpt-4o-mini"', b'"MODEL":"o3-mini","model":"gpt-4o-mini"'),
    _GOOD.replace(b'"model":"gpt-4o-mini"', b'"model":"o3-mini","model":"gpt-4o-mini"'),
    _GOOD.replace(b'"url"', b'"Body":{"model":"o3-mini"},"url"'),
    _GOOD.replace(b'"custom_id"', b'"body":{"model":"o3-mini"},"custom_id"'),
])
def test_a_line_that_names_its_model_two_ways_cannot_be_judged(line: bytes) -> None:
    assert batch_file_models(_GOOD + b"\n" + line + b"\n") is None


@pytest.mark.parametrize("content", ["\\" * 32, "\\" * 40 + '"', 'a "quoted" \\\\ text'])
def test_a_message_holding_long_runs_of_backslashes_is_judged(content: str) -> None:
    """Session 18's last review: the bounded walk (`repeats_a_key`) gave up on 64
    backslashes before a quote in the JSON, and the file's models were unknown."""
    import orjson
    line = orjson.dumps({"custom_id": "1", "method": "POST", "url": "/chat/completions",
                         "body": {"model": "gpt-4o", "messages": [
                             {"role": "user", "content": content}]}})
    assert batch_file_models(line + b"\n") == frozenset({"gpt-4o"})

"""A body naming two output maximums (`max_tokens` beside `max_completion_tokens`) is
reserved by the larger: the gateway itself sends a reasoning deployment the
`max_completion_tokens` (compat.py `_adapt_reasoning`: `max_tokens` is dropped when
both are set), and another deployment gets both. Reserved by `max_tokens` alone, a
`"max_tokens": 1` beside any `max_completion_tokens` let a request past a key's TPM
limit (and its budget hold) whose answer may cost all of it, on every route: the
usual chat's (`_usual_chat`), `_governed`'s and `hold`'s short paths, and
`request_estimate`'s."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.governed import request_estimate
from azure_openai_proxy.governance.estimate import max_output_tokens
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from tests.unit.test_governed_usual import Clock, _azure_answer, _Pair, _Request

_HI = [{"role": "user", "content": "hi"}]
_COUNT = st.one_of(st.integers(0, 10_000), st.booleans(), st.just(2.5), st.none(),
                   st.just(-3), st.just("9"))


@given(st.fixed_dictionaries({}, optional={
    "max_tokens": _COUNT, "max_completion_tokens": _COUNT, "max_output_tokens": _COUNT,
    "n": st.integers(1, 3)}), st.sampled_from(["chat/completions", "responses"]))
@settings(max_examples=300)
def test_the_most_output_is_the_largest_maximum_named(body: dict[str, Any],
                                                      operation: str) -> None:
    body = {"messages": _HI, **body}
    counts = [value for name, value in body.items() if name.startswith("max_")
              and type(value) is int and value >= 0]
    n = body.get("n", 1)
    most = max_output_tokens(body, 1024, operation)
    assert most == (max(counts) if counts else 1024) * n
    assert request_estimate(body, 1024, operation)[1] == most
    assert request_estimate(body, 1024, operation, 1)[1] == most


async def _statuses(body: dict[str, Any]) -> list[tuple[int, int]]:
    """A usual key's (TPM 2,000) answers to `body` twice, on the shipped gateway (first
    `_governed`, which decides the key, then `_usual_chat`) and on the general loop."""
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            _, secret = pair.store.create_key("k", limits=Limits(rpm=50, tpm=2000),
                                              now=pair.clock.now)
            await pair.reload()
            seen = []
            for _ in range(2):
                for app, azure in zip(pair.apps, pair.azures, strict=True):
                    task = asyncio.ensure_future(app(_Request(secret, orjson.dumps(body))))
                    for _ in range(1000):
                        if task.done() or azure.waiting:
                            break
                        await asyncio.sleep(0)
                    sent = len(azure.waiting)
                    if sent:
                        azure.waiting.pop().set_result(_azure_answer((1, 1), 200))
                    answer = await task
                    assert isinstance(answer, Answer)
                    seen.append((answer.status, sent))
            return seen
        finally:
            await pair.close()


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o", "messages": _HI, "max_tokens": 1, "max_completion_tokens": 5000},
    {"model": "gpt-4o", "messages": _HI, "max_completion_tokens": 5000, "max_tokens": 0},
    {"model": "gpt-4o", "messages": _HI, "max_completion_tokens": 5000},
])
def test_a_small_max_tokens_beside_a_large_maximum_does_not_pass_the_tpm_limit(
        body: dict[str, Any]) -> None:
    # 5,000 output tokens alone are more than the key's minute: refused, never sent.
    assert asyncio.run(_statuses(body)) == [(429, 0)] * 4


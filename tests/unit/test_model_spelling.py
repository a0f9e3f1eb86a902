"""A key limited to some models is judged by the body's `model`: a body that also spells
it `Model` or `MODEL` (which an upstream binding JSON case-insensitively, as the v1 API's
may, would read instead: a model the key may not use) is refused with a 400 naming the
parameter, before anything reaches Azure. Keys without an allow-list are not judged by
the model, and are not refused for the spelling."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from tests.unit.test_governed_usual import Clock, _azure_answer, _Pair, _Request


async def _answer(models: tuple[str, ...], body: Mapping[str, object]) -> tuple[int, object, int]:
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            _, secret = pair.store.create_key("limited", models=models, limits=Limits(rpm=50),
                                              now=pair.clock.now)
            await pair.reload()
            app, azure = pair.apps[0], pair.azures[0]
            task = asyncio.ensure_future(app(_Request(secret, orjson.dumps(body))))
            for _ in range(1000):  # loop turns until it is at Azure or answered
                if task.done() or azure.waiting:
                    break
                await asyncio.sleep(0)
            sent = len(azure.waiting)
            if sent:
                azure.waiting.pop().set_result(_azure_answer((1, 1), 200))
            answer = await task
            assert isinstance(answer, Answer)
            return answer.status, orjson.loads(answer.body), sent
        finally:
            await pair.close()


@pytest.mark.parametrize("spelling", ["Model", "MODEL", "mOdel"])
def test_a_limited_keys_model_in_other_letters_is_refused(spelling: str) -> None:
    body = {"model": "gpt-4o", spelling: "o3-mini",
            "messages": [{"role": "user", "content": "hi"}]}
    status, error, sent = asyncio.run(_answer(("gpt-4o",), body))
    assert status == 400 and sent == 0
    assert isinstance(error, dict)
    assert error["error"]["param"] == "model"
    assert spelling in error["error"]["message"]


def test_a_key_without_an_allow_list_is_refused_too_and_a_plain_body_goes_through() -> None:
    # Since session 18 every virtual key's body is priced (and its ledger record
    # written) by its model: `Model` beside it is a 400 for a key without an allow-list
    # too (gateway/chatfiles.py `PRICED_TOP_NAMES`); it went through before.
    body = {"model": "gpt-4o", "Model": "o3-mini",
            "messages": [{"role": "user", "content": "hi"}]}
    assert asyncio.run(_answer((), body))[::2] == (400, 0)
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert asyncio.run(_answer(("gpt-4o",), plain))[::2] == (200, 1)

"""A usual key's plain chat that spells out `store: false` (OpenAI's default) takes the
short path (`Gateway._usual_chat`) as one without `store` does; `store: true` does not:
a stored chat is the key's, which `_governed` records (tests/e2e/test_storedclaim_stream.py
checks that it is). Was: `store` was not among `PLAIN_CHAT_NAMES`, so `store: false`
went the general governed way too (the same limits, more CPU)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.test_governed_usual import Clock, _Azure, _azure_answer, _Request, one_deployment_settings


async def _taken(directory: Path, bodies: list[dict[str, Any]]) -> list[bool]:
    """Whether `_usual_chat` took each of `bodies`, sent in turn by one key with limits
    (after a first plain chat, which decides the key's limits in `_governed`)."""
    clock = Clock()
    store = KeyStore.open(directory / "gateway.db")
    config = one_deployment_settings(directory)
    azure = _Azure()
    app = create_app(config, azure, clock=clock)
    _, secret = store.create_key("k", limits=Limits(rpm=100, tpm=100_000), now=clock.now)
    gateway = app.gateway
    usual = gateway._usual_chat
    taken: list[bool] = []

    def counted(*args: Any) -> Any:
        chosen = usual(*args)
        taken.append(chosen is not None)
        return chosen

    gateway._usual_chat = counted  # type: ignore[method-assign]
    await app.startup()
    try:
        plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": 5}
        for body in [plain, *bodies]:
            task = asyncio.ensure_future(app(_Request(secret, orjson.dumps(body))))
            for _ in range(1000):
                if task.done() or azure.waiting:
                    break
                await asyncio.sleep(0)
            azure.waiting.pop(0).set_result(_azure_answer((3, 2), 200))
            answer = await asyncio.wait_for(task, 30)
            assert isinstance(answer, Answer) and answer.status == 200, answer
    finally:
        await app.shutdown()
        await app.cleanup()
        store.close()
    assert taken[0] is False  # the key's limits not decided yet: `_governed`
    return taken[1:]


def test_store_false_takes_the_usual_chat_path_and_store_true_does_not() -> None:
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
             "max_tokens": 5}
    bodies = [plain, {**plain, "store": False}, {**plain, "store": True},
              {**plain, "store": False, "stream": False}, {**plain, "store": None}]
    with tempfile.TemporaryDirectory() as directory:
        taken = asyncio.run(_taken(Path(directory), bodies))
    # main: [True, False, False, False, False] (`store` of any value: `_governed`)
    assert taken == [True, True, False, True, True]

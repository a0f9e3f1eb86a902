"""Review of the surfaces branch: the pages a key's list follows past one holding none
of its objects (gateway/ownedpages.py) are bounded in time, not only in count: a next
page Azure is slow to answer (a hang up to the read timeout, a 429's cooldown waited
out) must not keep the page the client asked for, which was ready."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from azure_openai_proxy.gateway import ownedpages
from azure_openai_proxy.gateway.ownedpages import own_page
from azure_openai_proxy.http.interface import Answer, Reply


def _page(ids: list[str], more: bool) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i} for i in ids], "has_more": more,
            "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


async def _none_mine(ids: list[str]) -> set[str]:
    return set()


def test_a_next_page_that_does_not_come_answers_the_last_one_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownedpages, "FOLLOW_SECONDS", 0.3, raising=False)
    asked: list[str] = []

    async def more(after: str) -> Reply:
        asked.append(after)
        if after == "b2":  # the second page comes at once, the third never
            return Answer(200, {}, orjson.dumps(_page(["b3", "b4"], True)))
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async def listing() -> bytes:
        return (await asyncio.wait_for(
            own_page(_none_mine, (_page(["b1", "b2"], True), ["b1", "b2"]), more), 5))[1]

    started = time.monotonic()
    answer = orjson.loads(asyncio.run(listing()))  # main: TimeoutError after 5 s
    assert time.monotonic() - started < 2
    assert asked == ["b2", "b4"]
    assert (answer["data"], answer["has_more"], answer["last_id"]) == ([], True, "b4")

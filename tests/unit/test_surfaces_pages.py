"""A key's page of a list asked again while it holds none of the key's objects
(gateway/ownedpages.py): pure parts, with plain answers."""

from __future__ import annotations

import asyncio

import orjson

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.gateway.ownedpages import MORE_PAGES, own_page
from azure_openai_proxy.http.interface import Answer, Reply


def _page(ids: list[str], more: bool) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i} for i in ids], "has_more": more,
            "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


def _listed(ids: list[str], more: bool) -> tuple[dict[str, object], list[str]]:
    return _page(ids, more), ids


async def _mine(ids: list[str]) -> set[str]:
    return {i for i in ids if i.startswith("a")}


def test_an_empty_page_is_followed_until_one_holds_the_keys() -> None:
    asked: list[str] = []

    async def more(after: str) -> Reply:
        asked.append(after)
        ids = {"b2": ["b3", "a1"], "a1": []}[after]
        return Answer(200, {}, orjson.dumps(_page(ids, False)))

    answer = orjson.loads(asyncio.run(own_page(_mine, _listed(["b1", "b2"], True), more)))
    assert asked == ["b2"]
    assert [x["id"] for x in answer["data"]] == ["a1"]
    assert (answer["has_more"], answer["last_id"]) == (False, "a1")


def test_a_page_with_the_keys_or_the_last_is_not_followed() -> None:
    async def more(after: str) -> Reply:
        raise AssertionError(after)

    kept = orjson.loads(asyncio.run(own_page(_mine, _listed(["a1", "b1"], True), more)))
    assert [x["id"] for x in kept["data"]] == ["a1"]
    last = orjson.loads(asyncio.run(own_page(_mine, _listed(["b1"], False), more)))
    assert (last["data"], last["last_id"]) == ([], None)


def test_a_failing_or_endless_next_page_answers_the_last_one_read() -> None:
    asked: list[str] = []

    async def failing(after: str) -> Reply:
        raise UpstreamError("gone")

    async def endless(after: str) -> Reply:
        asked.append(after)
        return Answer(200, {}, orjson.dumps(_page([after + "x"], True)))

    failed = orjson.loads(asyncio.run(own_page(_mine, _listed(["b1"], True), failing)))
    assert (failed["data"], failed["has_more"], failed["last_id"]) == ([], True, "b1")
    ended = orjson.loads(asyncio.run(own_page(_mine, _listed(["b"], True), endless)))
    assert len(asked) == MORE_PAGES
    assert (ended["data"], ended["has_more"], ended["last_id"]) == ([], True, "b" + "x" * 8)

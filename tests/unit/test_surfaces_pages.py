"""A key's page of a list asked again while it holds none of the key's objects
(gateway/ownedpages.py): pure parts, with plain answers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from azure_openai_proxy.errors import UpstreamError
from azure_openai_proxy.gateway.ownedpages import MORE_PAGES, own_page
from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned, owned_answer
from azure_openai_proxy.http.interface import Answer, Reply
from azure_openai_proxy.observability.record import RequestRecord


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

    answer = orjson.loads(_run(own_page(_mine, _listed(["b1", "b2"], True), more)))
    assert asked == ["b2"]
    assert [x["id"] for x in answer["data"]] == ["a1"]
    assert (answer["has_more"], answer["last_id"]) == (False, "a1")


def test_a_page_with_the_keys_or_the_last_is_not_followed() -> None:
    async def more(after: str) -> Reply:
        raise AssertionError(after)

    kept = orjson.loads(_run(own_page(_mine, _listed(["a1", "b1"], True), more)))
    assert [x["id"] for x in kept["data"]] == ["a1"]
    last = orjson.loads(_run(own_page(_mine, _listed(["b1"], False), more)))
    assert (last["data"], last["last_id"]) == ([], None)


def test_a_failing_or_endless_next_page_answers_the_last_one_read() -> None:
    asked: list[str] = []

    async def failing(after: str) -> Reply:
        raise UpstreamError("gone")

    async def endless(after: str) -> Reply:
        asked.append(after)
        return Answer(200, {}, orjson.dumps(_page([after + "x"], True)))

    failed = orjson.loads(_run(own_page(_mine, _listed(["b1"], True), failing)))
    assert (failed["data"], failed["has_more"], failed["last_id"]) == ([], True, "b1")
    ended = orjson.loads(_run(own_page(_mine, _listed(["b"], True), endless)))
    assert len(asked) == MORE_PAGES
    assert (ended["data"], ended["has_more"], ended["last_id"]) == ([], True, "b" + "x" * 8)


def _run(call: Any) -> bytes:
    return asyncio.run(call)[1]


def test_a_followed_job_list_gives_the_key_only_its_own_jobs_models() -> None:
    """The key's fine-tuning jobs' models become its own when it lists them: those of
    the page it is answered, never of the other keys' pages passed over."""
    def job(job_id: str, model: str) -> dict[str, object]:
        return {"id": job_id, "object": "fine_tuning.job", "fine_tuned_model": model}

    async def more(after: str) -> Reply:
        return Answer(200, {}, orjson.dumps({"object": "list", "has_more": False,
                                             "data": [job("ftjob-a", "ft:mine")]}))

    async def scenario() -> tuple[Owned | None, Owned | None]:
        owners = ObjectOwners()
        await owners.remember("ftjob-a", Owned("key-a"))
        await owners.remember("ftjob-b", Owned("key-b"))
        first = {"object": "list", "has_more": True, "data": [job("ftjob-b", "ft:theirs")]}
        reply = Answer(200, {}, orjson.dumps(first))
        await owned_answer(owners, "GET", "fine_tuning/jobs", "key-a", RequestRecord("id", "GET"),
                           reply, None, None, more)
        assert [j["id"] for j in orjson.loads(reply.body)["data"]] == ["ftjob-a"]
        return await owners.get("ft:mine"), await owners.get("ft:theirs")

    mine, theirs = asyncio.run(scenario())
    assert mine is not None and mine.key_id == "key-a"
    assert theirs is None

"""Responses `item_reference`s in ownership (gateway/ownership.py): which ids a body
names, which a created response owns, and which an input-items list hands its owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.ownedanswers import output_item_ids
from azure_openai_proxy.gateway.ownership import (
    ObjectNotFound,
    ObjectOwners,
    Owned,
    item_references,
    object_ids,
    owned_answer,
)
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord


def test_item_references_in_input_and_in_a_conversations_items_are_named() -> None:
    body = {"model": "gpt-4o", "previous_response_id": "resp_1", "input": [
        {"type": "item_reference", "id": "msg_1"},
        {"role": "user", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "message", "id": "msg_given", "role": "assistant", "content": []},
        {"type": "item_reference", "id": ""}, {"type": "item_reference", "id": 7}, "junk"]}
    assert item_references(body) == ["msg_1"]
    assert object_ids("responses", body) == (["resp_1", "msg_1"], [])
    items = {"items": [{"type": "item_reference", "id": "fc_2"}]}
    assert object_ids("conversations/conv_1/items", items) == (["conv_1", "fc_2"], [])
    assert item_references({"input": "text"}) == [] and item_references(None) == []


def test_a_created_responses_output_items_are_its_owners() -> None:
    raw = orjson.dumps({"id": "resp_1", "output": [
        {"id": "rs_1", "type": "reasoning"}, {"id": "msg_1", "type": "message"},
        {"type": "message"}]})
    assert output_item_ids(raw) == ["rs_1", "msg_1"]
    assert output_item_ids(b"not json") == [] and output_item_ids(b'{"output": 3}') == []

    async def scenario() -> None:
        owners = ObjectOwners()
        record = RequestRecord("r1", "POST")
        record.created_id = "resp_1"
        await owned_answer(owners, "POST", "responses", "key-a", record,
                           Answer(200, {}, raw), None)
        await owners.check(["resp_1", "msg_1", "rs_1"], "key-a", True)
        try:
            await owners.check(["msg_1"], "key-b", False)
        except ObjectNotFound as refused:
            assert refused.message == "No such object: msg_1"
        else:
            raise AssertionError("another key's item was let through")

    asyncio.run(scenario())


def test_listing_its_own_responses_input_items_hands_them_to_the_key() -> None:
    listed = orjson.dumps({"object": "list", "data": [{"id": "msg_in", "type": "message"}]})

    async def scenario() -> None:
        owners = ObjectOwners()
        await owners.remember("resp_a", Owned("key-a"))
        for key in ("key-b", "key-a"):  # b's listing of a's response claims nothing
            await owned_answer(owners, "GET", "responses/resp_a/input_items", key,
                               RequestRecord("r", "GET"), Answer(200, {}, listed), None)
        assert await owners.get("msg_in") == Owned("key-a")
        await owned_answer(owners, "GET", "responses/resp_x/input_items", "key-b",
                           RequestRecord("r", "GET"), Answer(200, {}, orjson.dumps(
                               {"data": [{"id": "msg_x"}]})), None)
        assert await owners.get("msg_x") is None  # resp_x is nobody's known: no claim

    asyncio.run(scenario())


def test_a_listing_never_takes_an_item_the_database_knows_as_anothers(tmp_path: Path) -> None:
    """An input item listed with an id another key owns (an item replayed inline keeps its
    id) stays that key's, even when this worker has forgotten it or never saw it: memory
    must not believe the claimant while the database keeps the owner."""
    listed = orjson.dumps({"object": "list", "data": [{"id": "msg_b"}, {"id": "msg_new"}]})
    database = tmp_path / "owners.db"

    async def scenario() -> None:
        other_worker = ObjectOwners(database=database)
        await other_worker.remember("msg_b", Owned("key-b"))
        other_worker.close()
        owners = ObjectOwners(capacity=4, database=database)
        await owners.remember("resp_a", Owned("key-a"))
        await owned_answer(owners, "GET", "responses/resp_a/input_items", "key-a",
                           RequestRecord("r", "GET"), Answer(200, {}, listed), None)
        assert await owners.get("msg_b") == Owned("key-b")
        assert await owners.get("msg_new") == Owned("key-a")
        try:
            await owners.check(["msg_b"], "key-a", False)
        except ObjectNotFound:
            pass
        else:
            raise AssertionError("a listing handed another key's item to the lister")
        finally:
            owners.close()

    asyncio.run(scenario())


def test_a_background_responses_output_is_its_owners_once_read() -> None:
    """Created with `background: true`, a response has no output yet: its items are
    claimed when its owner reads it, and a restricted key may then reference them."""
    done = orjson.dumps({"id": "resp_bg", "status": "completed",
                         "output": [{"id": "msg_bg", "type": "message"}]})

    async def scenario() -> None:
        owners = ObjectOwners()
        record = RequestRecord("r1", "POST")
        record.created_id = "resp_bg"
        await owned_answer(owners, "POST", "responses", "key-a", record, Answer(
            200, {}, orjson.dumps({"id": "resp_bg", "status": "queued", "output": []})), None)
        for key in ("key-b", "key-a"):  # b reading a's response claims nothing
            await owned_answer(owners, "GET", "responses/resp_bg", key,
                               RequestRecord("r", "GET"), Answer(200, {}, done), None)
        await owners.check(["msg_bg"], "key-a", True)
        assert await owners.get("msg_bg") == Owned("key-a")

    asyncio.run(scenario())


def test_a_conversations_items_are_its_owners_once_added_or_listed() -> None:
    added = orjson.dumps({"object": "list", "data": [{"id": "msg_c1", "type": "message"}]})
    listed = orjson.dumps({"object": "list", "data": [{"id": "msg_c2", "type": "message"}]})

    async def scenario() -> None:
        owners = ObjectOwners()
        await owners.remember("conv_a", Owned("key-a"))
        await owned_answer(owners, "POST", "conversations/conv_a/items", "key-b",
                           RequestRecord("r", "POST"), Answer(200, {}, added), None)
        assert await owners.get("msg_c1") is None
        await owned_answer(owners, "POST", "conversations/conv_a/items", "key-a",
                           RequestRecord("r", "POST"), Answer(200, {}, added), None)
        await owned_answer(owners, "GET", "conversations/conv_a/items", "key-a",
                           RequestRecord("r", "GET"), Answer(200, {}, listed), None)
        await owners.check(["msg_c1", "msg_c2"], "key-a", True)

    asyncio.run(scenario())

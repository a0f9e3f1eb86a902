"""Object ownership: pure parts (gateway/ownership.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from azure_openai_proxy.errors import OwnersUnavailable
from azure_openai_proxy.gateway.affinity import (
    MAX_REFERENCE_DEPTH,
    MAX_REFERENCE_VALUES,
    ReferenceKeyCased,
    ReferencesUncheckable,
    ids_referenced,
)
from azure_openai_proxy.gateway.batchcheck import (
    MAX_BATCH_LINES,
    batch_file_models,
    uploaded_batch_models,
)
from azure_openai_proxy.gateway.ownedanswers import filtered
from azure_openai_proxy.gateway.ownership import (
    ObjectNotFound,
    ObjectOwners,
    Owned,
    chat_file_ids,
    list_ids,
    object_ids,
)
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.store.ownership import OwnerStore
from azure_openai_proxy.store.sqlite import LockWaits, connect


def test_a_known_owner_is_the_only_one_let_through() -> None:
    async def scenario() -> None:
        owners = ObjectOwners(capacity=2)
        await owners.remember("file-a", Owned("key-a"))
        await owners.remember("file-a", Owned("key-b"))  # an owned object keeps its owner
        await owners.check(["file-a"], "key-a", restricted=True)
        with pytest.raises(ObjectNotFound):
            await owners.check(["file-a"], "key-b", restricted=False)
        await owners.check(["file-x"], "key-b", restricted=False)  # unknown: unrestricted only
        with pytest.raises(ObjectNotFound):
            await owners.check(["file-x"], "key-b", restricted=True)
        await owners.remember("file-b", Owned("key-a"))
        await owners.remember("file-c", Owned("key-a"))
        assert len(owners) == 2 and await owners.get("file-a") is None  # bounded

    asyncio.run(scenario())


def test_the_database_remembers_past_the_memory_and_across_instances(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        first = ObjectOwners(capacity=1, database=database)
        await first.remember("file-a", Owned("key-a", frozenset({"gpt-4o", "o3-mini"})))
        await first.remember("file-b", Owned("key-b"))  # file-a leaves the memory
        assert await first.get("file-a") == Owned("key-a", frozenset({"gpt-4o", "o3-mini"}))
        second = ObjectOwners(database=database)  # another worker, or after a restart
        await second.check(["file-a"], "key-a", restricted=True)
        with pytest.raises(ObjectNotFound):
            await second.check(["file-b"], "key-a", restricted=False)
        assert await second.owned_of("key-a", ["file-a", "file-b", "file-z"]) == {"file-a"}
        first.close()
        second.close()

    asyncio.run(scenario())


def test_the_ids_a_request_names() -> None:
    assert object_ids("files/file-1/content", None) == (["file-1"], [])
    assert object_ids("batches", {"input_file_id": "file-2"}) == (["file-2"], [])
    assert object_ids("threads/runs", {"assistant_id": "asst-1"}) == (["asst-1"], [])
    assert object_ids("fine_tuning/jobs/ftjob-1/cancel", None) == (["ftjob-1"], [])
    assert object_ids("fine_tuning/jobs", {"training_file": "x", "validation_file": "y"}) == (
        ["x", "y"], [])
    assert object_ids("files", None) == ([], [])
    # Past the first id, a path names sub-objects of it.
    assert object_ids("threads/t-1/runs/run-1/steps/step-1", None) == (
        ["t-1"], ["run-1", "step-1"])
    assert object_ids("vector_stores/vs-1/files/file-1", None) == (["vs-1"], ["file-1"])
    # A checkpoint is its job owner's (session 15): named, as a job is.
    assert object_ids("fine_tuning/checkpoints/ck-1/permissions/p-1", None) == (
        ["ck-1"], ["p-1"])


def test_every_reference_in_a_body_is_named() -> None:
    body = {
        "file_ids": ["f-1", 7, ""],
        "tool_resources": {"code_interpreter": {"file_ids": ["f-2"]},
                           "file_search": {"vector_store_ids": ["vs-1"],
                                           "vector_stores": [{"file_ids": ["f-3"]}]}},
        "tools": [{"type": "file_search", "vector_store_ids": ["vs-2"]},
                  {"type": "function", "function": {"name": "f", "parameters": {
                      "properties": {"file_id": {"default": "not-a-reference"}}}}}],
        "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f-4"},
                                                {"type": "input_text", "text": "file_id"}]}],
        "attachments": [{"file_id": "f-5"}],
        "conversation": {"id": "conv-1"},
        "metadata": {"file_id": "not-a-reference-either"},
        "text": {"format": {"type": "json_schema", "schema": {"file_id": "schema"}}},
        "include": [{"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "see",
             "annotations": [{"type": "container_file_citation", "file_id": "cfile-1"}]}]},
            {"type": "file_search_call", "results": [{"file_id": "f-quoted"}]}],
    }
    named, inner = object_ids("responses", body)
    assert sorted(named) == ["conv-1", "f-1", "f-2", "f-3", "f-4", "f-5", "vs-1", "vs-2"]
    assert inner == []
    assert object_ids("responses", {"conversation": "conv-2"})[0] == ["conv-2"]


def test_a_body_too_deep_or_too_wide_to_check_is_refused() -> None:
    deep: dict[str, Any] = {"file_id": "f-deep"}
    for _ in range(MAX_REFERENCE_DEPTH + 1):
        deep = {"a": deep}
    wide = {"input": [{"role": "user"}] * (MAX_REFERENCE_VALUES + 1)}
    for body in (deep, wide):
        with pytest.raises(ReferencesUncheckable) as refused:
            object_ids("responses", body)
        assert refused.value.http_status == 400
        # Affinity reads what it can, and never refuses.
        assert ids_referenced("responses/r-1", body) == ["r-1"]
    fits: dict[str, Any] = {"file_id": "f-1"}
    for _ in range(MAX_REFERENCE_DEPTH - 1):
        fits = {"a": fits}
    assert object_ids("responses", fits) == (["f-1"], [])


def test_a_list_of_ids_counts_against_the_bound() -> None:
    # Found by review: an id field's list was copied uncounted, so a million ids passed.
    for body in ({"file_ids": ["file-x"] * 1_000_000},
                 {"tools": [{"vector_store_ids": ["vs-x"] * (MAX_REFERENCE_VALUES + 1)}]}):
        with pytest.raises(ReferencesUncheckable) as refused:
            object_ids("vector_stores", body)
        assert refused.value.http_status == 400
        assert ids_referenced("vector_stores/vs-1", body) == ["vs-1"]
    assert object_ids("vector_stores", {"file_ids": ["f"] * 1000})[0] == ["f"] * 1000
    parts = [{"type": "file", "file": {"file_id": "file-x"}}] * (MAX_REFERENCE_VALUES + 1)
    with pytest.raises(ReferencesUncheckable):
        chat_file_ids(b"file", {"messages": [{"role": "user", "content": parts}]})


def test_check_looks_up_many_ids_in_one_query(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "gateway.db"
    statements: list[str] = []

    def traced(path: Path, waits: LockWaits | None = None) -> OwnerStore:  # the real
        connection = connect(path)  # store, its statements counted
        connection.set_trace_callback(statements.append)
        return OwnerStore(connection, waits)

    monkeypatch.setattr(OwnerStore, "open", staticmethod(traced))

    def lookups() -> int:
        return sum(1 for s in statements if s.startswith("SELECT") and "object_owners" in s)

    async def scenario() -> None:
        owners = ObjectOwners(capacity=10, database=database)
        await owners.remember("file-mine", Owned("key-a"))
        before = lookups()
        ids = ["file-mine"] + ["file-x"] * 20_000 + [f"file-{n}" for n in range(1200)]
        await owners.check(ids, "key-a", restricted=False, inner=["file-x"] * 100)
        assert lookups() - before <= 3  # one IN query per 500 distinct ids, not one per id
        with pytest.raises(ObjectNotFound) as refused:
            await owners.check(["file-mine", "file-unknown"], "key-a", restricted=True)
        assert "file-unknown" in str(refused.value)
        other = ObjectOwners(database=database)  # knows file-mine from the database only
        with pytest.raises(ObjectNotFound):
            await other.check(["file-y", "file-mine"], "key-b", restricted=False)
        await other.check(["file-mine"] * 3, "key-a", restricted=True)
        owners.close()
        other.close()

    asyncio.run(scenario())


def test_a_list_keeps_only_the_owned_objects() -> None:
    raw = orjson.dumps({"object": "list", "data": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
                        "first_id": "a", "last_id": "c", "has_more": False})
    listed = list_ids(raw)
    assert listed is not None and listed[1] == ["a", "b", "c"]
    kept = orjson.loads(filtered(listed[0], {"b", "c"}))
    assert [x["id"] for x in kept["data"]] == ["b", "c"]
    assert (kept["first_id"], kept["last_id"]) == ("b", "c")
    assert list_ids(b'{"id": "x"}') is None
    assert list_ids(b"not json") is None


def _form(content: bytes) -> bytes:
    return (b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n"
            b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n--B--\r\n")


def _models(form: bytes) -> frozenset[str] | None:
    async def chunks() -> AsyncIterator[bytes]:
        yield form[:10]
        yield form[10:]

    async def read() -> frozenset[str] | None:
        spool = await SpooledBody.read(chunks(), len(form))
        try:
            return await uploaded_batch_models(spool, b"B")
        finally:
            spool.close()

    return asyncio.run(read())


def test_the_models_of_a_batch_file() -> None:
    lines = b'{"body": {"model": "gpt-4o"}}\n\n{"body": {"model": "o3-mini"}}\n'
    assert _models(_form(lines)) == frozenset({"gpt-4o", "o3-mini"})
    assert _models(_form(b'{"body": {}}\n')) is None  # a line without a model
    assert _models(_form(b"{not json\n")) is None
    assert _models(b"--B--\r\n") is None  # no file part
    assert _models(_form(lines).replace(b"\r\nbatch\r\n", b"\r\nuser_data\r\n")) is None
    # a purpose past 256 bytes is not read (it was, whole, and stripped to "batch"):
    # its models unknown, as a file with no purpose's
    padded = b"\r\nbatch" + b" " * 300 + b"\r\n"
    assert _models(_form(lines).replace(b"\r\nbatch\r\n", padded)) is None
    padded = b"\r\nbatch" + b" " * 200 + b"\r\n"
    assert _models(_form(lines).replace(b"\r\nbatch\r\n", padded)) == frozenset(
        {"gpt-4o", "o3-mini"})


def test_a_batch_file_past_azures_bound_is_not_read_to_its_end() -> None:
    line = b'{"body": {"model": "gpt-4o"}}\n'
    assert batch_file_models(line * MAX_BATCH_LINES) == frozenset({"gpt-4o"})
    assert batch_file_models(line * (MAX_BATCH_LINES + 1)) is None


def test_a_failing_database_leaves_the_memory_answering(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")

    async def scenario() -> None:
        owners = ObjectOwners(database=tmp_path / "not-a-directory" / "gateway.db")
        await owners.remember("file-a", Owned("key-a"))  # no exception: memory only
        await owners.check(["file-a"], "key-a", restricted=True)
        # unknown, and the key is restricted: not known to be gone either (the database
        # did not answer), so a retryable 503, not a 404 (session 29)
        with pytest.raises(OwnersUnavailable):
            await owners.check(["file-b"], "key-a", restricted=True)
        await owners.check(["file-b"], "key-b", restricted=False)  # unrestricted: served
        assert await owners.owned_of("key-a", ["file-a"]) == {"file-a"}  # memory's
        # a list naming one memory does not know: not guessed (session 30; was {"file-a"},
        # the key's own objects made elsewhere left out as if gone)
        with pytest.raises(OwnersUnavailable):
            await owners.owned_of("key-a", ["file-a", "file-b"])
        owners.close()
        memory = ObjectOwners()  # no database: memory is all there is to know
        with pytest.raises(ObjectNotFound):
            await memory.check(["file-b"], "key-a", restricted=True)

    asyncio.run(scenario())


def test_the_files_a_chat_request_names() -> None:
    def named(raw: bytes) -> list[str]:
        return chat_file_ids(raw, orjson.loads(raw))

    part = b'{"type": "file", "file": {"file_id": "file-1"}}'
    assert named(b'{"messages": [{"role": "user", "content": [' + part + b"]}]}") == ["file-1"]
    # Spelled with escapes, the key still names a file: the bytes search lets it through.
    escaped = b'{"messages": [{"role": "user", "content": [{"type": "\\u0066ile", ' \
              b'"\\u0066ile": {"\\u0066ile_id": "f-2"}}]}]}'
    assert b"file" not in escaped and named(escaped) == ["f-2"]
    assert named(b'{"messages": [{"role": "user", "content": "a file"}]}') == []
    assert named(b'{"messages": "file"}') == [] and chat_file_ids(b"file", None) == []


def test_a_decoy_part_does_not_stand_for_the_file() -> None:
    allowed = b'{"body": {"model": "gpt-4o"}}\n'
    denied = b'{"body": {"model": "o3-mini"}}\n'
    decoy = (b"--B\r\nContent-Disposition: form-data; name=\"decoy\"; filename=\"file\"\r\n"
             b"Content-Type: application/jsonl\r\n\r\n" + allowed + b"\r\n")
    # The real `file` part follows the decoy: its models are the ones recorded.
    assert _models(decoy + _form(denied)) == frozenset({"o3-mini"})
    # Parameter names are case-insensitive; a `name` parameter inside a quoted
    # filename is not the part's name.
    upper = _form(denied).replace(b'; name="file"', b'; NAME="file"')
    assert _models(upper) == frozenset({"o3-mini"})
    quoted = (b"--B\r\nContent-Disposition: form-data; filename=\"x; name=file\"; "
              b"name=\"other\"\r\n\r\n" + allowed + b"\r\n")
    assert _models(quoted + _form(denied)) == frozenset({"o3-mini"})
    # Two parts that could each be the file: which one Azure takes is unknown.
    twice = _form(allowed).replace(b"--B--\r\n", b"") + _form(denied)[len(
        b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"):]
    assert _models(twice) is None
    two_purposes = _form(allowed).replace(
        b"--B\r\n", b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
        b"batch\r\n--B\r\n", 1)
    assert _models(two_purposes) is None


@pytest.mark.parametrize("raw", [
    b'{"messages": [{"role": "user", "content": "a file"}]}',
    b'{"messages": [{"role": "user", "content": "\\u0066ile"}, {"role": "system",'
    b' "content": "x"}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}',
    b'{"messages": [{"role": "user", "content": "x", "file": {"file_id": "f"}}]}',
    b'{"messages": [{"role": "user", "content": "x"}], "input": "file"}',
    b'{"messages": [' + b", ".join([b'{"role": "user", "content": "file"}'] * 50_001) + b"]}",
])
def test_plain_messages_name_the_files_the_bytes_search_finds(raw: bytes) -> None:
    # A governed chat request skips the bytes search when its messages are all a role and
    # a string content (`plain_chat_chars`, measured for the token estimate anyway).
    from azure_openai_proxy.gateway.governed import plain_chat_chars

    body = orjson.loads(raw)
    plain = plain_chat_chars(body) >= 0
    try:
        expected: list[str] | type[Exception] = chat_file_ids(raw, body)
    except ReferencesUncheckable:
        expected = ReferencesUncheckable
    if expected is ReferencesUncheckable:
        with pytest.raises(ReferencesUncheckable):
            chat_file_ids(raw, body, plain)
    else:
        assert chat_file_ids(raw, body, plain) == expected


def test_a_claim_is_known_at_once_and_written_in_the_background(tmp_path: Path) -> None:
    """A stream's ids (a streamed response's, its items'): memory knows them without an
    await, the database once written, so another worker knows them too."""
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        first = ObjectOwners(database=database)
        await first.remember("msg-b", Owned("key-b"))
        other = ObjectOwners(database=database)  # another worker: msg-b in its database only
        other.claim(["resp-a", "msg-a", "resp-a"], Owned("key-a"))
        assert await other.get("resp-a") == Owned("key-a")  # before any write is awaited
        other.claim(["msg-b"], Owned("key-a"))  # the database says it is key-b's
        await other.written()
        assert await other.get("msg-b") == Owned("key-b")  # memory took it back
        await first.check(["resp-a", "msg-a"], "key-a", restricted=True)
        with pytest.raises(ObjectNotFound):
            await first.check(["msg-b"], "key-a", restricted=False)
        first.close()
        other.close()

    asyncio.run(scenario())


def test_a_claim_without_a_database_is_memory_only() -> None:
    async def scenario() -> None:
        owners = ObjectOwners()
        owners.claim(["resp-a"], Owned("key-a"))
        owners.claim(["resp-a"], Owned("key-b"))  # already owned: keeps its owner
        await owners.written()
        await owners.check(["resp-a"], "key-a", restricted=True)

    asyncio.run(scenario())


class _SearchedBytes(bytes):
    """Bytes that count how often they are searched (`in`)."""

    searches = 0

    def __contains__(self, needle: Any) -> bool:
        type(self).searches += 1
        return super().__contains__(needle)


def test_a_large_chat_body_is_walked_not_searched() -> None:
    """An inline image makes a chat body large, not its parts many: searching 20 MB of
    base64 for "file" took 31-50 ms, walking its two parts microseconds."""
    image = "data:image/png;base64," + "QUJD" * 300_000  # 1.2 MB
    part = {"type": "file", "file": {"file_id": "file-9"}}
    for content, named in (([{"type": "image_url", "image_url": {"url": image}}], []),
                           ([{"type": "image_url", "image_url": {"url": image}}, part],
                            ["file-9"])):
        body = {"messages": [{"role": "user", "content": content}]}
        raw = _SearchedBytes(orjson.dumps(body))
        _SearchedBytes.searches = 0
        assert chat_file_ids(raw, body) == named
        assert _SearchedBytes.searches == 0
    small = _SearchedBytes(b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}')
    assert chat_file_ids(small, orjson.loads(bytes(small))) == []
    # A small one is searched first, as before: "file", `\\u`, and what another
    # spelling of `file_id` holds (`_i`, `_I`, `_` and a dotless i).
    assert _SearchedBytes.searches == 5


def test_a_large_chat_body_of_too_many_parts_to_walk_is_searched() -> None:
    """Past the walk's bound a large body is searched as a smaller one is: naming no file
    it goes through (before, the walk of large bodies gave it a 400), else it is a 400."""
    parts = [{"type": "text", "text": "a line of a long agent transcript"}]
    messages = [{"role": "user", "content": parts}] * (MAX_REFERENCE_VALUES // 2 + 1)
    body = {"messages": messages}
    raw = orjson.dumps(body)
    assert len(raw) >= 1024 * 1024
    assert chat_file_ids(raw, body) == []
    named = {"messages": [*messages, {"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-9"}}]}]}
    with pytest.raises(ReferencesUncheckable):
        chat_file_ids(orjson.dumps(named), named)


@pytest.mark.parametrize("operation, body", [
    # A prompt's variables are named by the client (a value may still be a file: below).
    ("responses", {"model": "m", "input": "hi",
                   "prompt": {"id": "pmpt_1", "variables": {"File_Id": "x", "Type": "y"}}}),
    # A vector store file's attributes, an MCP tool's headers: the client's names.
    ("vector_stores/vs_1/files", {"file_id": "file-1", "attributes": {"Type": "doc", "ID": "7"}}),
    ("responses", {"model": "m", "input": "hi", "tools": [
        {"type": "mcp", "server_label": "s", "server_url": "https://x", "headers": {"Input": "1"}}]}),
    # An eval's item schema and its data rows.
    ("evals", {"name": "e", "testing_criteria": [], "data_source_config": {
        "type": "custom", "item_schema": {"properties": {"Input": {"type": "string"}}}}}),
    ("evals/eval_1/runs", {"data_source": {"type": "jsonl", "source": {
        "type": "file_content", "content": [{"item": {"Input": "x", "ID": {"Type": 3}},
                                             "sample": {"Id": 1}}]}}}),
])
def test_the_clients_own_names_are_not_refused_for_their_letters(
        operation: str, body: dict[str, object]) -> None:
    object_ids(operation, body)  # no ReferenceKeyCased


def test_a_prompt_variable_still_names_its_file_and_is_checked() -> None:
    def body(part: dict[str, str]) -> dict[str, Any]:
        return {"model": "m", "input": "hi",
                "prompt": {"id": "pmpt_1", "variables": {"Doc": part}}}

    assert "file-1" in object_ids("responses", body({"type": "input_file", "file_id": "file-1"}))[0]
    with pytest.raises(ReferenceKeyCased):
        object_ids("responses", body({"type": "input_file", "File_Id": "file-1"}))


def test_an_objects_home_is_recorded_with_its_owner_for_every_worker(tmp_path: Path) -> None:
    """Where an object was made (endpoint, deployment) is kept with its owner in the
    database: another worker's `check` returns the named ids' homes, which it routes a
    request about them by (a batch from a file it never saw uploaded)."""
    database = tmp_path / "gateway.db"
    east = ("https://east.example", "gpt-4o")

    async def scenario() -> None:
        first = ObjectOwners(database=database)
        await first.remember("file-a", Owned("key-a", frozenset({"gpt-4o-mini"}), east))
        await first.remember("file-b", Owned("key-a"))  # no home recorded
        second = ObjectOwners(database=database)  # another worker, or after a restart
        assert await second.check(["file-b", "file-a"], "key-a", restricted=True) == [
            ("file-a", east)]
        assert await second.check(["file-b"], "key-a", restricted=True) == []
        assert await second.get("file-a") == Owned("key-a", frozenset({"gpt-4o-mini"}), east)
        first.close()
        second.close()

    asyncio.run(scenario())


def test_a_table_made_before_homes_gets_their_columns_and_keeps_its_rows(
        tmp_path: Path) -> None:
    """A database an older gateway made: its rows read with no home, new ones with
    theirs; an older gateway's insert (its four columns) still works beside it."""
    database = tmp_path / "gateway.db"
    old = connect(database)
    old.execute("CREATE TABLE object_owners (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
                "models TEXT, created REAL NOT NULL) WITHOUT ROWID")
    old.execute("INSERT INTO object_owners VALUES ('file-old', 'key-a', 'gpt-4o', 1.0)")
    store = OwnerStore.open(database)
    again = OwnerStore.open(database)  # a second worker finds the columns there
    try:
        store.add("file-new", "key-a", None, 2.0, ("https://east.example", "gpt-4o"))
        old.execute("INSERT INTO object_owners (id, key_id, models, created) "
                    "VALUES ('file-older', 'key-b', NULL, 3.0)")
        assert store.get("file-old") == ("key-a", frozenset({"gpt-4o"}), None)
        assert again.get_many(["file-new", "file-older"]) == {
            "file-new": ("key-a", None, ("https://east.example", "gpt-4o")),
            "file-older": ("key-b", None, None)}
    finally:
        store.close()
        again.close()
        old.close()

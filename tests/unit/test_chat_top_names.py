"""A plain chat (every message a role and a string content: `plain_chat_chars`) has its
file parts never walked; its top-level names must still be exact: a `Messages` beside
`messages` is what an upstream binding JSON case-insensitively reads (the last spelling
winning), and its file parts, another key's files, were never checked."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from tests.unit.test_governed_usual import Clock, _azure_answer, _Pair, _Request

_THEIRS = "file-of-another-key"


async def _answer(body: Mapping[str, object]) -> tuple[int, object, int]:
    """The status and body the gateway answers a key with `body`, and how many requests
    reached Azure; `_THEIRS` is owned by another key."""
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            _, secret = pair.store.create_key("mine", limits=Limits(rpm=50, tpm=10_000),
                                              now=pair.clock.now)
            await pair.reload()
            app, azure = pair.apps[0], pair.azures[0]
            app.gateway.owners.claim([_THEIRS], Owned(pair.ids[1]))
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


_FILE_MESSAGE = {"role": "user", "content": [
    {"type": "file", "file": {"file_id": _THEIRS}}]}


@pytest.mark.parametrize("spelling", ["Messages", "MESSAGES", "messageS"])
def test_a_plain_chats_messages_in_other_letters_are_refused(spelling: str) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            spelling: [_FILE_MESSAGE], "max_tokens": 5}
    status, error, sent = asyncio.run(_answer(body))
    assert (status, sent) == (400, 0)
    assert isinstance(error, dict)
    assert spelling in error["error"]["message"]


def test_the_same_file_under_messages_is_another_keys_and_plain_chats_pass() -> None:
    # What the check above guards: the file part itself is refused (404, not this key's).
    body = {"model": "gpt-4o", "messages": [_FILE_MESSAGE], "max_tokens": 5}
    assert asyncio.run(_answer(body))[::2] == (404, 0)
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
             "max_tokens": 5, "metadata": {"Messages": "x", "Model": "y"}}
    assert asyncio.run(_answer(plain))[::2] == (200, 1)


def test_the_usual_top_names_are_each_spelled_as_read() -> None:
    # A body of these alone skips the check: none may be another spelling of a name read.
    from azure_openai_proxy.gateway.chatfiles import USUAL_TOP_NAMES

    for name in USUAL_TOP_NAMES:
        assert name.isascii() and name == name.lower(), name

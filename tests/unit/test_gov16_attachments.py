"""A thread message's attachments given to file search make Azure create a vector store
for the thread, billed per GB-day: refused to a hard budget like the other storage starts
(`unmetered_work`); attachments for code interpreter only, and other keys, unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.gateway.budgethold import unmetered_work

SEARCHED = {"file_id": "file-1", "tools": [{"type": "file_search"}]}
CODE = {"file_id": "file-2", "tools": [{"type": "code_interpreter"}]}


def _message(*attachments: Any) -> dict[str, Any]:
    return {"role": "user", "content": "read this", "attachments": list(attachments)}


@pytest.mark.parametrize(("operation", "body"), [
    ("threads/thread_1/messages", _message(SEARCHED)),
    ("threads/thread_1/messages", _message(CODE, SEARCHED)),
    ("threads/thread_1/messages", _message({"file_id": "f", "tools": [
        {"type": "code_interpreter"}, {"type": "file_search"}]})),
    ("threads", {"messages": [{"role": "user", "content": "hi"}, _message(SEARCHED)]}),
    ("threads/thread_1/Messages", _message(SEARCHED)),  # other letters, folded
])
def test_an_attachment_for_file_search_starts_storage(operation: str,
                                                      body: dict[str, Any]) -> None:
    work = unmetered_work(operation, body)
    assert work is not None and "GB-day" in work[0]


@pytest.mark.parametrize(("operation", "body"), [
    ("threads/thread_1/messages", _message(CODE)),
    ("threads/thread_1/messages", {"role": "user", "content": "hi"}),
    ("threads/thread_1/messages", {"role": "user", "content": "hi", "attachments": None}),
    ("threads/thread_1/messages", _message("file-1", {"tools": "file_search"}, {"tools": [7]})),
    ("threads", {"messages": [_message(CODE)]}),
    ("threads", {"messages": "not a list"}),
    ("threads/thread_1/messages/msg_1", _message(SEARCHED)),  # a message's metadata updated
    ("threads/thread_1", {"metadata": {"a": "b"}}),
])
def test_other_messages_start_none(operation: str, body: dict[str, Any]) -> None:
    assert unmetered_work(operation, body) is None

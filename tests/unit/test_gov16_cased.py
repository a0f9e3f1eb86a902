"""Session 16's review of session 15 (gaps15): a hard budget's refusals read the body's
names exactly, where Azure binds them case-insensitively (ASP.NET Core's defaults, the
gateway's own model: affinity.py `folded`): `Tool_Resources`, `Attachments`, `Tools`,
`File_Search` (a tool's type), `Background` started storage or unmetered work past the
budget. And a path below `responses/compact` named no object at all (was refused to a
restricted key before session 15 as an id of unknown owner). Each case failed before."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.gateway.budgethold import unmetered_work
from azure_openai_proxy.gateway.ownership import object_ids
from azure_openai_proxy.routing import classify

STORE = [{"file_ids": ["file-1"]}]


def _message(**fields: Any) -> dict[str, Any]:
    return {"role": "user", "content": "x", **fields}


@pytest.mark.parametrize(("operation", "body"), [
    ("assistants", {"model": "gpt-4o", "Tool_Resources": {"file_search": {"vector_stores": STORE}}}),
    ("assistants", {"model": "gpt-4o", "tool_resources": {"File_Search": {"vector_stores": STORE}}}),
    ("threads", {"tool_resources": {"file_search": {"Vector_Stores": STORE}}}),
    ("threads", {"tool_resources": {}, "TOOL_RESOURCES": {"file_search": {"vector_stores": STORE}}}),
    ("threads", {"Messages": [_message(attachments=[
        {"file_id": "file-1", "tools": [{"type": "file_search"}]}])]}),
    ("threads", {"messages": [_message(Attachments=[
        {"file_id": "file-1", "tools": [{"type": "file_search"}]}])]}),
    ("threads/thread_1/messages", _message(attachments=[
        {"file_id": "file-1", "Tools": [{"type": "file_search"}]}])),
    ("threads/thread_1/messages", _message(attachments=[
        {"file_id": "file-1", "tools": [{"Type": "File_Search"}]}])),
])
def test_storage_spelled_in_other_letters_is_refused(operation: str, body: dict[str, Any]) -> None:
    work = unmetered_work(operation, body)
    assert work is not None and "GB-day" in work[0]


@pytest.mark.parametrize("operation", ["responses", "responses/compact"])
@pytest.mark.parametrize("name", ["Background", "BACKGROUND", "backGround"])
def test_background_in_other_letters_is_refused(operation: str, name: str) -> None:
    work = unmetered_work(operation, {"model": "gpt-4o", "input": "x", name: True})
    assert work is not None and "Background" in work[0]
    assert unmetered_work(operation, {"model": "gpt-4o", "input": "x", name: False}) is None


def test_what_starts_nothing_still_passes() -> None:
    assert unmetered_work("assistants", {"model": "gpt-4o", "Tool_Resources": {
        "code_interpreter": {"file_ids": ["file-1"]}}}) is None
    assert unmetered_work("threads/thread_1/messages", _message(Attachments=[
        {"file_id": "file-1", "Tools": [{"Type": "code_interpreter"}]}])) is None
    assert unmetered_work("responses", {"model": "gpt-4o", "input": "x"}) is None


def test_a_path_below_an_operation_names_an_object() -> None:
    target = classify("GET", "/v1/responses/compact/input_items", "/v1")
    assert object_ids(target.operation, None)[0] == ["compact"]  # an id of unknown owner
    assert object_ids("responses/compact", {"model": "gpt-4o"})[0] == []  # the operation

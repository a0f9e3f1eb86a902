"""The Assistants API (v2), as Azure serves it on dated preview api-versions from
2024-05-01-preview (`/openai/assistants`, `/openai/threads...`; the SDKs send
`OpenAI-Beta: assistants=v2`, which Azure does not require): assistants, threads, their
messages, runs and run steps. Not on GA versions nor the v1 API (404). Azure's v1
Assistants (2024-02-15-preview to 2024-04-01-preview) is not emulated (404 here): the
gateway sends 2024-05-01-preview or later for them (apiversions.py).

A run is answered `queued` when made, with no usage, as Azure answers it (the work is
asynchronous); it completes the first time it is read after that (the run, its list,
its steps, the thread's messages): the assistant's message added to the thread, one
`message_creation` step, and the run's `usage` (the prompt: the instructions and the
thread's messages; the completion: the message's text), which its step repeats. A
cancel of a run not yet read stops it (`cancelled`, no usage); of one done, Azure's
400. A run made with `"stream": true` is done at once and answered as Azure's event
stream (emulator/assistants_stream.py). A request's messages are all checked before any
is kept (a bad role: a 400, nothing made); a message's `content` parts are kept one
block each. `threads/runs` makes a thread (its `thread`: messages, metadata, tool
resources) and a run of it in one call, checked whole before either is made: answered
as a run is (its `thread_id` the new thread's), streamed with `thread.created` first.
Not emulated: tool calls (a run with tools answers with a message)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import validation, wire_errors
from azure_openai_proxy.emulator.assistants_stream import streamed_run
from azure_openai_proxy.emulator.exchange import Exchange
from azure_openai_proxy.emulator.storage import Stores
from azure_openai_proxy.emulator.textgen import count_tokens, generate_tokens

_ANSWER_TOKENS = 24  # the assistant message's length, in tokens
_ASSISTANT_FIELDS = ("name", "description", "instructions", "tools", "tool_resources",
                     "metadata", "temperature", "top_p", "response_format")


# Fields kept and read later (a run's `instructions` make its prompt): a wrong type is
# Azure's 400 at once, never a 500 at a later read of the thread.
_TYPES = {"instructions": (str, "a string"), "metadata": (dict, "an object"),
          "thread": (dict, "an object"),
          "additional_messages": (list, "an array"), "messages": (list, "an array")}


def _checked(body: dict[str, Any], *names: str) -> dict[str, Any]:
    """`body`, its `names` (of `_TYPES`) each absent, null or of its type; a list's items
    objects."""
    for name in names:
        value, (kind, expected) = body.get(name), _TYPES[name]
        if value is not None and not isinstance(value, kind):
            raise validation.invalid_type(name, expected, value)
        items: list[object] = value if kind is list and value else []
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise validation.invalid_type(f"{name}[{n}]", "an object", item)
    return body


def _ids(ex: Exchange) -> tuple[str, ...]:
    return ex.route.ids


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    return value if isinstance(value, str) else ""


def _found(table: dict[str, dict[str, Any]], kind: str, object_id: str) -> dict[str, Any]:
    found = table.get(object_id)
    if found is None:
        raise wire_errors.not_found_object(kind, object_id)
    return found


def _listed(ex: Exchange, items: list[dict[str, Any]]) -> web.Response:
    """A list page as the Assistants API answers one: newest first unless `order=asc`,
    `limit` (20) items, `after`/`before` by id."""
    query = ex.request.query
    ordered = items if query.get("order") == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    if query.get("after") in ids:
        ordered = ordered[ids.index(query["after"]) + 1:]
    elif query.get("before") in ids:
        ordered = ordered[:ids.index(query["before"])]
    try:
        limit = max(1, min(100, int(query.get("limit", "20"))))
    except ValueError:
        raise wire_errors.invalid_request("'limit' must be an integer.", "limit") from None
    page = ordered[:limit]
    return ex.json({"object": "list", "data": page,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                    "has_more": len(ordered) > limit})


def _deployment(ex: Exchange, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise wire_errors.invalid_request("Missing required parameter: 'model'.", "model",
                                          "missing_required_parameter")
    if ex.config.deployment(name) is None:
        raise wire_errors.deployment_not_found()
    return name


async def assistant_create(ex: Exchange) -> web.StreamResponse:
    stores, body = ex.state.stores, _checked(ex.body, "instructions", "metadata")
    assistant = {"id": stores.new_id("asst_"), "object": "assistant",
                 "created_at": stores.clock(), "model": _deployment(ex, body.get("model")),
                 **{name: body.get(name) for name in _ASSISTANT_FIELDS}}
    assistant_id = str(assistant["id"])
    assistant["tools"] = assistant["tools"] or []
    assistant["metadata"] = assistant["metadata"] or {}
    stores.assistants[assistant_id] = assistant
    return ex.json(assistant)


async def assistants(ex: Exchange) -> web.StreamResponse:
    return _listed(ex, list(ex.state.stores.assistants.values()))


async def assistant(ex: Exchange) -> web.StreamResponse:
    return ex.json(_found(ex.state.stores.assistants, "Assistant", _ids(ex)[0]))


async def assistant_delete(ex: Exchange) -> web.StreamResponse:
    found = _found(ex.state.stores.assistants, "Assistant", _ids(ex)[0])
    del ex.state.stores.assistants[found["id"]]
    return ex.json({"id": found["id"], "object": "assistant.deleted", "deleted": True})


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": text, "annotations": []}}


def _blocks(content: object) -> list[dict[str, Any]]:
    """A message's `content` as Azure keeps it: a string, one text block; content parts,
    one block each (text, image_file, image_url)."""
    if not isinstance(content, list):
        return [_text_block(content if isinstance(content, str) else "")]
    blocks = []
    for part in content:
        if isinstance(part, str):
            blocks.append(_text_block(part))
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            blocks.append(_text_block(part["text"]))
        elif isinstance(part, dict) and part.get("type") in ("image_file", "image_url"):
            kind = part["type"]
            blocks.append({"type": kind, kind: part.get(kind)})
    return blocks


def _checked_messages(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`bodies`, every one checked (`_message`'s rules) before any is kept."""
    for body in bodies:
        if _checked(body, "metadata").get("role") not in ("user", "assistant"):
            raise wire_errors.invalid_request("'role' must be 'user' or 'assistant'.", "role")
    return bodies


def _message(stores: Stores, thread_id: str, body: dict[str, Any],
             run: dict[str, Any] | None = None) -> dict[str, Any]:
    role = _checked_messages([body])[0]["role"]
    message = {"id": stores.new_id("msg_"), "object": "thread.message",
               "created_at": stores.clock(), "assistant_id": run and run["assistant_id"],
               "thread_id": thread_id, "run_id": run and run["id"], "role": role,
               "status": "completed", "completed_at": stores.clock(),
               "incomplete_at": None, "incomplete_details": None,
               "content": _blocks(body.get("content")),
               "attachments": body.get("attachments") or [],
               "metadata": body.get("metadata") or {}}
    stores.thread_messages.setdefault(thread_id, []).append(message)
    return message


def _new_thread(stores: Stores, body: dict[str, Any]) -> dict[str, Any]:
    """A thread made from `body` (a thread's create request), its messages checked first."""
    messages = _checked_messages(_checked(body, "messages", "metadata").get("messages") or [])
    thread_id = stores.new_id("thread_")
    thread = {"id": thread_id, "object": "thread",
              "created_at": stores.clock(), "metadata": body.get("metadata") or {},
              "tool_resources": body.get("tool_resources") or {}}
    stores.threads[thread_id] = thread
    stores.thread_messages[thread_id] = []
    for message in messages:
        _message(stores, thread_id, message)
    return thread


async def thread_create(ex: Exchange) -> web.StreamResponse:
    return ex.json(_new_thread(ex.state.stores, ex.body))


def _thread(ex: Exchange) -> dict[str, Any]:
    return _found(ex.state.stores.threads, "Thread", _ids(ex)[0])


async def thread(ex: Exchange) -> web.StreamResponse:
    return ex.json(_thread(ex))


async def thread_update(ex: Exchange) -> web.StreamResponse:
    found = _thread(ex)
    if "metadata" in _checked(ex.body, "metadata"):
        found["metadata"] = ex.body.get("metadata") or {}
    return ex.json(found)


async def thread_delete(ex: Exchange) -> web.StreamResponse:
    stores, found = ex.state.stores, _thread(ex)
    for table in (stores.threads, stores.thread_messages, stores.thread_runs):
        table.pop(found["id"], None)
    return ex.json({"id": found["id"], "object": "thread.deleted", "deleted": True})


async def message_create(ex: Exchange) -> web.StreamResponse:
    return ex.json(_message(ex.state.stores, _thread(ex)["id"], ex.body))


def _settle_thread(stores: Stores, thread_id: str) -> None:
    """Its runs not read since made: completed now (a read shows them done)."""
    for run in stores.thread_runs.get(thread_id, {}).values():
        if run["status"] == "queued":
            _complete(stores, run)


async def messages(ex: Exchange) -> web.StreamResponse:
    stores, thread_id = ex.state.stores, _thread(ex)["id"]
    _settle_thread(stores, thread_id)
    listed = stores.thread_messages.get(thread_id, [])
    run_id = ex.request.query.get("run_id")
    return _listed(ex, [m for m in listed if run_id is None or m["run_id"] == run_id])


async def message(ex: Exchange) -> web.StreamResponse:
    stores, thread_id = ex.state.stores, _thread(ex)["id"]
    _settle_thread(stores, thread_id)
    table = {m["id"]: m for m in stores.thread_messages.get(thread_id, [])}
    return ex.json(_found(table, "Message", _ids(ex)[1]))


async def run_create(ex: Exchange) -> web.StreamResponse:
    thread_id = _thread(ex)["id"]
    added = _checked_messages(_checked(ex.body, "instructions", "metadata",
                                       "additional_messages").get("additional_messages") or [])
    helper, model = _runner(ex)
    for message_body in added:
        _message(ex.state.stores, thread_id, message_body)
    return await _started(ex, thread_id, helper, model)


async def thread_run_create(ex: Exchange) -> web.StreamResponse:
    """`threads/runs`: a thread made from the body's `thread` and a run of it. The run's
    fields and the thread's messages are all checked before either is made."""
    made = _checked(ex.body, "instructions", "metadata", "thread").get("thread") or {}
    _checked_messages(_checked(made, "messages", "metadata").get("messages") or [])
    helper, model = _runner(ex)
    thread = _new_thread(ex.state.stores, made)
    return await _started(ex, thread["id"], helper, model, thread)


def _runner(ex: Exchange) -> tuple[dict[str, Any], str]:
    """The assistant a run's body names (a 400 without one, a 404 for an unknown one)
    and the deployment it runs on."""
    if not _text(ex.body, "assistant_id"):
        raise wire_errors.invalid_request("Missing required parameter: 'assistant_id'.",
                                          "assistant_id", "missing_required_parameter")
    helper = _found(ex.state.stores.assistants, "Assistant", _text(ex.body, "assistant_id"))
    return helper, _deployment(ex, ex.body.get("model") or helper["model"])


async def _started(ex: Exchange, thread_id: str, helper: dict[str, Any], model: str,
                   thread: dict[str, Any] | None = None) -> web.StreamResponse:
    """A run of `thread_id` by `helper` made (queued), answered as JSON, or done at once
    and streamed (`stream: true`; `thread`, one made with it, told first)."""
    stores = ex.state.stores
    run = {"id": stores.new_id("run_"), "object": "thread.run", "created_at": stores.clock(),
           "assistant_id": helper["id"], "thread_id": thread_id, "status": "queued",
           "started_at": None, "expires_at": None, "cancelled_at": None, "failed_at": None,
           "completed_at": None, "required_action": None, "last_error": None,
           "model": model,
           "instructions": ex.body.get("instructions") or helper["instructions"] or "",
           "tools": ex.body.get("tools") or helper["tools"],
           "metadata": ex.body.get("metadata") or {}, "usage": None,
           "temperature": ex.body.get("temperature"), "top_p": ex.body.get("top_p"),
           "max_prompt_tokens": ex.body.get("max_prompt_tokens"),
           "max_completion_tokens": ex.body.get("max_completion_tokens"),
           "truncation_strategy": {"type": "auto", "last_messages": None},
           "incomplete_details": None, "response_format": "auto", "tool_choice": "auto",
           "parallel_tool_calls": True}
    stores.thread_runs.setdefault(thread_id, {})[run["id"]] = run
    stores.run_steps[run["id"]] = []
    if ex.body.get("stream") is True:  # done now, told as Azure's events
        made = dict(run)
        return await ex.stream(streamed_run(made, run, _complete(stores, run), stores, thread))
    return ex.json(dict(run))


def _complete(stores: Stores, run: dict[str, Any]) -> list[str]:
    """The run done: the assistant's answer added, its step made, its usage counted.
    Returns the answer's tokens."""
    thread_id, now = run["thread_id"], stores.clock()
    prompt = run["instructions"] + "".join(
        block["text"]["value"] for m in stores.thread_messages.get(thread_id, [])
        for block in m["content"] if block["type"] == "text")
    most = run["max_completion_tokens"]
    count = min(_ANSWER_TOKENS, most) if isinstance(most, int) and most > 0 else _ANSWER_TOKENS
    tokens = generate_tokens(prompt, None, count)
    answer = "".join(tokens)
    usage = {"prompt_tokens": max(1, count_tokens(prompt)), "completion_tokens": count}
    usage["total_tokens"] = usage["prompt_tokens"] + count
    made = _message(stores, thread_id, {"role": "assistant", "content": answer}, run)
    run.update(status="completed", started_at=now, completed_at=now, usage=usage)
    stores.run_steps[run["id"]].append({
        "id": stores.new_id("step_"), "object": "thread.run.step", "created_at": now,
        "assistant_id": run["assistant_id"], "thread_id": thread_id, "run_id": run["id"],
        "type": "message_creation", "status": "completed", "cancelled_at": None,
        "completed_at": now, "expired_at": None, "failed_at": None, "last_error": None,
        "step_details": {"type": "message_creation",
                         "message_creation": {"message_id": made["id"]}},
        "usage": dict(usage), "metadata": {}})
    return tokens


def _run(ex: Exchange, settle: bool = True) -> dict[str, Any]:
    stores, thread_id = ex.state.stores, _thread(ex)["id"]
    found = _found(stores.thread_runs.get(thread_id, {}), "Run", _ids(ex)[1])
    if settle and found["status"] == "queued":
        _complete(stores, found)
    return found


async def runs(ex: Exchange) -> web.StreamResponse:
    stores, thread_id = ex.state.stores, _thread(ex)["id"]
    _settle_thread(stores, thread_id)
    return _listed(ex, list(stores.thread_runs.get(thread_id, {}).values()))


async def run(ex: Exchange) -> web.StreamResponse:
    return ex.json(_run(ex))


async def run_cancel(ex: Exchange) -> web.StreamResponse:
    found = _run(ex, settle=False)
    if found["status"] != "queued":
        raise wire_errors.invalid_request(
            f"Cannot cancel run with status '{found['status']}'.")
    found.update(status="cancelled", cancelled_at=ex.state.stores.clock())
    return ex.json(found)


async def run_steps(ex: Exchange) -> web.StreamResponse:
    return _listed(ex, ex.state.stores.run_steps.get(_run(ex)["id"], []))


async def run_step(ex: Exchange) -> web.StreamResponse:
    table = {s["id"]: s for s in ex.state.stores.run_steps.get(_run(ex)["id"], [])}
    return ex.json(_found(table, "Step", _ids(ex)[2]))


HANDLERS: dict[str, Callable[[Exchange], Awaitable[web.StreamResponse]]] = {
    "assistant_create": assistant_create, "assistants": assistants,
    "assistant": assistant, "assistant_delete": assistant_delete,
    "thread_create": thread_create, "thread": thread, "thread_update": thread_update,
    "thread_delete": thread_delete, "message_create": message_create,
    "messages": messages, "message": message, "run_create": run_create, "runs": runs,
    "thread_run_create": thread_run_create,
    "run": run, "run_cancel": run_cancel, "run_steps": run_steps, "run_step": run_step,
}

"""The Assistants API's routes and which of them take a JSON body (emulator/assistants.py
answers them): on dated preview api-versions from 2024-05-01-preview alone. Pure."""

from __future__ import annotations

__all__ = ["JSON_OPERATIONS", "OPERATIONS", "ROUTES"]

JSON_OPERATIONS = frozenset({"assistant_create", "thread_create", "thread_update",
                             "message_create", "run_create", "thread_run_create"})
_ID = r"([A-Za-z0-9_.:-]{1,200})"
# (pattern relative to /openai, method, operation)
ROUTES = [
    ("assistants", "POST", "assistant_create"), ("assistants", "GET", "assistants"),
    (rf"assistants/{_ID}", "GET", "assistant"),
    (rf"assistants/{_ID}", "DELETE", "assistant_delete"),
    ("threads", "POST", "thread_create"),
    ("threads/runs", "POST", "thread_run_create"),  # before `threads/{id}`'s POST
    (rf"threads/{_ID}", "GET", "thread"),
    (rf"threads/{_ID}", "POST", "thread_update"),
    (rf"threads/{_ID}", "DELETE", "thread_delete"),
    (rf"threads/{_ID}/messages", "POST", "message_create"),
    (rf"threads/{_ID}/messages", "GET", "messages"),
    (rf"threads/{_ID}/messages/{_ID}", "GET", "message"),
    (rf"threads/{_ID}/runs", "POST", "run_create"), (rf"threads/{_ID}/runs", "GET", "runs"),
    (rf"threads/{_ID}/runs/{_ID}", "GET", "run"),
    (rf"threads/{_ID}/runs/{_ID}/cancel", "POST", "run_cancel"),
    (rf"threads/{_ID}/runs/{_ID}/steps", "GET", "run_steps"),
    (rf"threads/{_ID}/runs/{_ID}/steps/{_ID}", "GET", "run_step"),
]
OPERATIONS = frozenset(operation for _, _, operation in ROUTES)

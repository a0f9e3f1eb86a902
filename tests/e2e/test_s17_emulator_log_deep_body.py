"""Review of session 17 (bad input, the emulator): the emulator logs each request's parsed JSON and
`GET /_emulator/requests` serialises the log with orjson.dumps (emulator/admin.py:23),
which stops at 254 levels: once any request nested 254+ levels reached the emulator (a
chat body whose `stream_options` the gateway passes through, or a 300-deep
`response_format`), every later `Emulator.requests()` in that test is a 500
("TypeError: Recursion limit reached"), so an e2e test that sends such a body cannot read
what reached Azure."""
from __future__ import annotations

import httpx

from tests.e2e.conftest import AZURE_KEY, Emulator, emulator  # noqa: F401


def test_the_request_log_survives_a_deep_body(emulator: Emulator) -> None:  # noqa: F811
    deep = "[" * 300 + "]" * 300
    httpx.post(emulator.url + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
               headers={"api-key": AZURE_KEY, "Content-Type": "application/json"},
               content='{"messages":[{"role":"user","content":"hi"}],"zz":' + deep + "}", timeout=10)
    answer = httpx.get(emulator.url + "/_emulator/requests", timeout=10)
    assert answer.status_code == 200, answer.text[:200]  # main: 500

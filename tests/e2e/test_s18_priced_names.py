"""A virtual key's JSON body that spells a name its limits and budget are estimated by in
other letters (`Input` beside `input`, `Max_Tokens`, `Model`) is a 400 for every key, not
only for keys with an allow-list or on chat (gateway/pipeline.py calls
`check_top_names` for every governed JSON body): an upstream that binds names
case-insensitively, the last spelling winning, would run what was never held.
(Found by session 18's review; the body shapes are its reproducer's.)"""

from __future__ import annotations

import httpx

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator, emulator  # noqa: F401
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401


def test_a_budget_keys_priced_names_in_other_letters_are_refused(
        governed: Governed) -> None:  # noqa: F811
    _, secret = governed.key("b", limits=Limits(budget_usd=100.0))
    for path, body in (
            ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x",
                                "Input": ["y"] * 50}),
            ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "x",
                                 "max_tokens": 1, "Max_Tokens": 4000}),
            ("/v1/responses", {"model": "gpt-4o", "input": "x", "Max_Output_Tokens": 4000}),
            ("/v1/responses", {"model": "gpt-4o-mini", "input": "x", "Model": "gpt-4o"})):
        answer = httpx.post(governed.server.url + path, json=body, timeout=30,
                            headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        error = answer.json()["error"]  # the name as read, and the spelling refused
        assert error["param"] in {name.lower() for name in body if name != name.lower()}
        assert "Unrecognized request argument" in error["message"]
    # spelled as OpenAI spells them: served
    answer = httpx.post(governed.server.url + "/v1/embeddings", timeout=30,
                        json={"model": "text-embedding-3-small", "input": "x"},
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text

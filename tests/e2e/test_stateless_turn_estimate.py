"""A stateless Responses turn that passes the last turn's image back (`input +=
response.output`) is served to a key whose minute holds its text (review of the issue
13 fixes): the walk that reads every string read the picture's base64 `result` as
text, 100,000 tokens for 400 KB, and refused it as larger than the key's minute."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)


def test_an_image_passed_back_is_an_image_not_its_base64(governed: Governed) -> None:  # noqa: F811
    _, secret = governed.key("tpm", limits=Limits(tpm=20_000))
    picture = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
               "result": "iVBORw0KGgo" * 40_000}
    turn: Any = [{"role": "user", "content": "draw a cat"}, picture,
                 {"role": "user", "content": "now make it blue"}]
    answer = governed.client(secret).responses.create(model="gpt-4o", input=turn,
                                                      max_output_tokens=16)
    assert answer.id

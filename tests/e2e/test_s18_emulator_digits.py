"""The emulator answers an images request whose `n` is a string of digits `int` cannot
read ("²": `str.isdigit` holds for it) as Azure does, a 400 naming `n`, where it
crashed (a 500); found by session 18's review of the holds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY


@pytest.mark.parametrize("n", ["²", "③", "1²"])
def test_a_picture_count_in_other_digits_is_a_400(gateway: Any, n: str) -> None:
    answer = httpx.post(gateway.url + "/v1/images/generations", json={
        "model": "dall-e-3", "prompt": "a cat", "n": n},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "n"

"""Review of 239deb0..37efce8 (session 21), end to end: the official `openai` SDK
through the gateway to the emulator. Each test fails on main."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.e2e.test_s19_image_tool import (  # noqa: F401
    HEADER,
    IMAGE_OUT,
    TOOL,
    _gateway,
    image_emulator,
)
from tests.e2e.test_s19_unanswered_units import _abandon, _left
from tests.support import ServerThread


def test_a_responses_picture_never_answered_is_recorded_with_its_picture(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A non-streamed Responses request with the hosted image tool, sent whole, whose
    answer never comes (the client's timeout): Azure finishes it and bills its picture
    at gpt-image-1's rates. The hold counted the picture (gateway/toolhold.py); the
    record (note_unanswered: `unanswered_usage` of its text) and so the budget's spend
    do not: main records its text alone, $0.0002, for a picture of $0.011."""
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "soft", soft_budget_usd=5.0,
                             budget_period="daily")
    image_emulator.fault("*", "hang", count=1, seconds=3)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                           timeout=1.0, default_headers={HEADER: "pictures"})
    _abandon(lambda: client.responses.create(
        model="gpt-4o", input="draw a cat", tools=TOOL,  # type: ignore[arg-type]
        max_output_tokens=16))
    [record] = _left(gateway, "responses")
    assert record.usage_source == "estimated", record
    assert record.cost_usd >= 272 * IMAGE_OUT / 1e6, record  # one low 1024x1024 picture

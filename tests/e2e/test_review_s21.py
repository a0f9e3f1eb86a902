"""Review of 239deb0..37efce8 (session 21), end to end: the official `openai` SDK
through the gateway to the emulator. Each test fails on main."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_with
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


def test_a_transcription_never_answered_is_spent_at_least_at_its_size_at_mp3s_fastest(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A key with a hard budget uploads 627 s of MP3 (24,000 frames at 128 kbit/s) whose
    Xing header says 1 frame, and leaves before the answer: Azure transcribes and bills
    every frame (whisper: $0.006 a minute, $0.063). The hold held the bound; the record
    and the budget's spend take the header's claim (audio_length), floored: at 37efce8 at
    the size at 9.2 Mbit/s, 8.7 s, $0.0009 (1/72: repeated, a key spent 72 times its
    budget at Azure); now at 448 kbit/s, which no MPEG frame passes: 179 s."""
    from tests.e2e.test_s19_unanswered_units import _client

    frames = 24_000
    xing = bytes(32) + b"Xing" + (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
    first = b"\xff\xfb\x90\x00" + xing + bytes(413 - len(xing))
    audio = first + (b"\xff\xfb\x90\x00" + bytes(413)) * (frames - 1)
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "hard", budget_usd=5.0,
                                  budget_period="daily")
    emulator.fault("whisper", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).audio.transcriptions.create(
        model="whisper-1", file=("talk.mp3", audio, "audio/mpeg"),
        response_format="verbose_json"))
    [heard] = _left(gateway, "audio/transcriptions")
    assert heard.usage_source == "estimated" and heard.priced, heard
    billed = frames * 1152 / 44_100 / 60 * 0.006  # what Azure bills: ~$0.063
    # 37efce8: $0.00087 (the size at 9.2 Mbit/s). Now the size at 448 kbit/s, the most
    # any MPEG frame runs at: a lying header takes off at most 1 - 128/448 of this file
    floor = len(audio) * 8 / 448_000 / 60 * 0.006
    assert heard.cost_usd == pytest.approx(floor) and floor >= billed * 127.7 / 448, heard
    guard = gateway.app.gateway.budgets  # type: ignore[attr-defined]
    assert float(guard.spent(("key", key_id), "daily")) == pytest.approx(heard.cost_usd)


@pytest.fixture
def mystery_emulator() -> Iterator[Emulator]:
    """The emulator with an images deployment `mystery` of a model no price knows."""
    with emulator_with(EmulatedDeployment("mystery", "mystery-image-1", "images")) as emulator:
        yield emulator


def test_a_soft_budgets_unpriced_picture_never_answered_stays_unpriced(
    mystery_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A soft budget serves a model the price table does not know (it only warns). Its
    picture sent and never answered has no price, and its hold is $0: settle_budget
    (96db930) writes that $0 hold as the record's `estimated_usd`, so the ledger's row
    says priced, $0.00, where it said unpriced: the usage report's `unpriced` count, the
    operator's sign that a price is missing, no longer shows it."""
    from tests.e2e.test_s19_unanswered_units import _client

    deployments = [{"model_name": model, "deployment_name": deployment,
                    "endpoint": mystery_emulator.url, "api_key": AZURE_KEY,
                    "api_version": "2025-04-01-preview"}
                   for model, deployment in {**MODELS, "mystery-image": "mystery"}.items()]
    gateway = ledger_gateway(mystery_emulator, deployment_config=deployments)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "soft", soft_budget_usd=5.0,
                             budget_period="daily")
    mystery_emulator.fault("mystery", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).images.generate(
        model="mystery-image", prompt="a lighthouse"))
    [picture] = _left(gateway, "images/generations")
    assert picture.usage_source == "estimated", picture
    # main: priced=True at $0.0
    assert not picture.priced or picture.cost_usd > 0, picture

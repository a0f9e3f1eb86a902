"""A picture, speech or transcription Azure received whose client left before the answer
is billed by Azure (it finishes non-streamed work): recorded with a non-zero estimate in
its units, flagged, for a key without a budget and for a static client key. It was
recorded with no usage, $0 and unpriced, unless its key had a hard budget (issue 13,
"never zero, never missing"). The official `openai` SDK through the gateway to the
emulator, whose answer is held back (its `hang` fault) until the client has left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.usage_report import read_usage
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.support import ServerThread, silent_wav
from tests.waiting import until

# The client leaves half a second after its upload; the emulator answers after three.
_LEAVES = 0.5


def _client(gateway: ServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0,
                         timeout=_LEAVES)


def _left(gateway: ServerThread, route: str, count: int = 1) -> list[UsageRecord]:
    """The records of `route` once `count` of them are written."""
    found: list[UsageRecord] = []

    def written() -> bool:
        found[:] = [r for r in records(gateway) if r.route == route]
        return len(found) >= count

    until(written, timeout=10, message=f"no record of {route}")
    return found


def _abandon(call: Callable[[], object]) -> None:
    with pytest.raises(openai.APITimeoutError):
        call()


def test_a_key_without_a_budget_records_abandoned_units_with_an_estimate(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "free")
    client = _client(gateway, secret)
    for deployment in ("dall-e-3", "tts", "whisper"):
        emulator.fault(deployment, "hang", count=1, seconds=3)
    _abandon(lambda: client.images.generate(model="dall-e-3", prompt="a lighthouse",
                                            size="1024x1024"))
    _abandon(lambda: client.audio.speech.create(model="tts-1", voice="alloy",
                                                input="x" * 1000))
    _abandon(lambda: client.audio.transcriptions.create(
        model="whisper-1", file=("minute.wav", silent_wav(60), "audio/wav")))
    [picture] = _left(gateway, "images/generations")
    [speech] = _left(gateway, "audio/speech")
    [heard] = _left(gateway, "audio/transcriptions")
    for record in (picture, speech, heard):
        assert record.key_id == key_id and record.status == 499, record
        assert record.usage_source == "estimated" and record.priced, record
    # on main: each 0.0, "none", unpriced
    assert picture.cost_usd == pytest.approx(0.04)  # dall-e-3: $0.04 a picture
    assert speech.cost_usd == pytest.approx(1000 * 15.0 / 1e6)  # tts: $15 per 1M chars
    # whisper: $0.006 a minute; the seconds are read from the file (an upper bound)
    assert heard.cost_usd == pytest.approx(0.006, rel=0.05)
    # the usage report (`azure-openai-proxy usage --by model`) counts them as estimated
    report = {row["model"]: row for row in read_usage(tmp_path / "gw.db", "model", 0, None)}
    for model in ("dall-e-3", "tts-1", "whisper-1"):
        assert (report[model]["estimated"], report[model]["unpriced"]) == (1, 0), report
        assert report[model]["cost_usd"] > 0


def test_a_static_client_key_records_an_abandoned_picture_with_an_estimate(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator)
    client = _client(gateway, CLIENT_KEY)
    emulator.fault("dall-e-3", "hang", count=1, seconds=3)
    _abandon(lambda: client.images.generate(model="dall-e-3", prompt="a lighthouse"))
    [picture] = _left(gateway, "images/generations")
    assert picture.key_id is None and picture.status == 499
    # on main: 0.0, "none", unpriced
    assert (picture.usage_source, picture.priced) == ("estimated", True)
    assert picture.cost_usd == pytest.approx(0.04)


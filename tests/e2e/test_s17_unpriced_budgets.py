"""Work whose cost the gateway could not know, against a hard budget, through the
gateway: a dall-e-3 picture the price table cannot price (hd, 1792x1024), a whisper
transcription in a format that carries no duration (`text`, `json`), were served and
recorded at $0 (`priced: false`), so the budget never stopped them; now they are refused
(403 `model_not_priced`) before Azure is called, and what can be priced is still
served and priced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.support import ServerThread, silent_wav


def test_an_unpriced_picture_is_refused_to_a_hard_budget(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "b", budget_usd=0.50,
                                  budget_period="daily")

    def picture(**body: str) -> httpx.Response:
        return httpx.post(gateway.url + "/v1/images/generations", timeout=30,
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "dall-e-3", "prompt": "a cat",
                                "response_format": "b64_json", **body})

    before = len(emulator.requests())
    refused = picture(quality="hd", size="1792x1024")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "model_not_priced"
    assert len(emulator.requests()) == before  # never sent
    served = picture(quality="standard", size="1024x1024")
    assert served.status_code == 200, served.text
    mine = [(r.status, r.priced, r.cost_usd) for r in records(gateway)
            if r.key_id == key_id and r.route == "images/generations"]
    assert sorted(mine) == [(200, True, 0.04), (403, True, 0.0)]


def test_a_transcription_that_cannot_say_its_cost_is_refused_to_a_hard_budget(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "b", budget_usd=0.50,
                                  budget_period="daily")

    def transcribe(response_format: str | None) -> httpx.Response:
        fields = {"model": "whisper"}
        if response_format is not None:
            fields["response_format"] = response_format
        return httpx.post(gateway.url + "/v1/audio/transcriptions", timeout=30,
                          headers={"Authorization": f"Bearer {secret}"}, data=fields,
                          files={"file": ("a.wav", silent_wav(2), "audio/wav")})

    before = len(emulator.requests())
    for response_format in ("text", "json", None, "srt"):
        refused = transcribe(response_format)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_priced", "response_format")
        assert "verbose_json" in error["message"]
    assert len(emulator.requests()) == before  # none sent
    served = transcribe("verbose_json")
    assert served.status_code == 200, served.text
    mine = [(r.status, r.priced, r.cost_usd) for r in records(gateway)
            if r.key_id == key_id and r.route == "audio/transcriptions" and r.status == 200]
    assert mine == [(200, True, pytest.approx(served.json()["duration"] / 60 * 0.006))]

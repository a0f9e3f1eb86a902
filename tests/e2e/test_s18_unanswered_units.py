"""A budgeted key's transcription whose client leaves before the answer: Azure runs and
bills it (Azure finishes non-streamed work), so it is recorded at what its budget held,
flagged as an estimate, and counts against the budget; it was recorded at $0 and its
hold let go, so a budget covering one minute let any number through one after another
(found by session 18's review of the transcription holds; its reproducer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.e2e.test_s18_media_holds import thinking_emulator  # noqa: F401  (fixture)
from tests.support import ServerThread, silent_wav


def test_a_transcription_left_by_its_client_counts_against_the_budget(
    thinking_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = ledger_gateway(thinking_emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "b", budget_usd=0.006,
                                  budget_period="daily")
    audio = silent_wav(60)  # a minute of whisper: $0.006, the whole budget
    before = len(thinking_emulator.requests())
    refused = 0
    for _ in range(3):
        try:
            answer = httpx.post(
                gateway.url + "/v1/audio/transcriptions",
                timeout=httpx.Timeout(10, read=0.5),  # the client leaves after the upload
                headers={"Authorization": f"Bearer {secret}"},
                data={"model": "whisper", "response_format": "verbose_json"},
                files={"file": ("minute.wav", audio, "audio/wav")})
        except httpx.ReadTimeout:
            continue
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "insufficient_quota"
        refused += 1
        time.sleep(0.3)
    assert len(thinking_emulator.requests()) - before == 1  # on main: 3, each one billed
    assert refused == 2
    mine = [r for r in records(gateway)
            if r.key_id == key_id and r.route == "audio/transcriptions"]
    assert sorted(r.status for r in mine) == [429, 429, 499], [
        (r.status, r.cost_usd, r.usage_source) for r in mine]
    [left] = [r for r in mine if r.status == 499]
    assert left.usage_source == "estimated"
    assert left.cost_usd == pytest.approx(0.006)

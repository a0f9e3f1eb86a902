"""A budget's hold for a transcription, through the gateway to the emulator (issue 13,
budgets; session 18): whisper's minutes were known only after the answer, so it held
nothing while it ran, and any number of concurrent transcriptions passed a budget that
covers one. Now the audio's length is read from the upload before it goes out: while
the first runs, the others are refused (429 insufficient_quota), never sent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Emulator, emulator_config
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.support import ServerThread, serve, silent_wav


@pytest.fixture
def thinking_emulator() -> Iterator[Emulator]:
    """Answers 1.5 s after the request: concurrent requests overlap."""
    from azure_openai_proxy.emulator import create_emulator_app

    with serve(lambda: create_emulator_app(emulator_config(ttft_ms=1500))) as server:
        yield Emulator(server)


def test_concurrent_transcriptions_are_refused_while_the_first_holds_the_budget(
    thinking_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = ledger_gateway(thinking_emulator)
    # a minute of whisper costs $0.006: the budget covers one such transcription
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "b", budget_usd=0.006,
                                  budget_period="daily")
    audio = silent_wav(60)
    answers: list[httpx.Response] = []

    def transcribe() -> None:
        answers.append(httpx.post(
            gateway.url + "/v1/audio/transcriptions", timeout=30,
            headers={"Authorization": f"Bearer {secret}"},
            data={"model": "whisper", "response_format": "verbose_json"},
            files={"file": ("minute.wav", audio, "audio/wav")}))

    before = len(thinking_emulator.requests())
    threads = [threading.Thread(target=transcribe) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answer.status_code for answer in answers) == [200, 429, 429, 429, 429]
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "insufficient_quota"
            assert answer.headers["x-should-retry"] == "false"
    # the refused never reached Azure; the one served is recorded at its minute
    assert len(thinking_emulator.requests()) == before + 1
    served = [r.cost_usd for r in records(gateway)
              if r.key_id == key_id and r.route == "audio/transcriptions" and r.status == 200]
    assert served == [pytest.approx(0.006)]

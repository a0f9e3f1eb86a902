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

from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_config
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


def gateway_settings_deployments(endpoint: str) -> list[dict[str, str]]:
    """The deployments `gateway_settings` configures (tests/e2e/conftest.py)."""
    return [{"model_name": model, "deployment_name": deployment, "endpoint": endpoint,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for model, deployment in MODELS.items()]


@pytest.fixture
def picturing_emulator() -> Iterator[Emulator]:
    """With a gpt-image-1 deployment, answering 1.5 s after the request."""
    from azure_openai_proxy.emulator import create_emulator_app
    from azure_openai_proxy.emulator.config import EmulatedDeployment

    image = EmulatedDeployment("gpt-image-1", "gpt-image-1-2025-04-15", "images")
    config = emulator_config(ttft_ms=1500)
    config = emulator_config(ttft_ms=1500, deployments=(*config.deployments, image))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


def test_concurrent_edits_of_a_large_picture_are_refused_while_the_first_holds_the_budget(
    picturing_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A low-quality 1024x1024 picture's output costs about $0.011; the input picture
    (1536x1024 at high fidelity: 65 + 2 tiles of 129 + 6,144 image tokens at $10 / 1M)
    $0.065 more. Held at its output alone, five ran at once on a $0.05 budget."""
    from azure_openai_proxy.emulator import media

    deployments = [*gateway_settings_deployments(picturing_emulator.url),
                   {"model_name": "gpt-image-1", "deployment_name": "gpt-image-1",
                    "endpoint": picturing_emulator.url, "api_key": AZURE_KEY,
                    "api_version": "2025-04-01-preview"}]
    gateway = ledger_gateway(picturing_emulator, deployment_config=deployments)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "p", budget_usd=0.05,
                                  budget_period="daily")
    picture = media.png(1536, 1024, (200, 30, 30))
    answers: list[httpx.Response] = []

    def edit() -> None:
        answers.append(httpx.post(
            gateway.url + "/v1/images/edits", timeout=30,
            headers={"Authorization": f"Bearer {secret}"},
            data={"model": "gpt-image-1", "prompt": "add a hat", "quality": "low",
                  "size": "1024x1024", "input_fidelity": "high"},
            files={"image": ("cat.png", picture, "image/png")}))

    before = len(picturing_emulator.requests())
    threads = [threading.Thread(target=edit) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answer.status_code for answer in answers) == [200, 429, 429, 429, 429]
    assert len(picturing_emulator.requests()) == before + 1
    [served] = [answer.json() for answer in answers if answer.status_code == 200]
    usage = served["usage"]  # the emulator bills the input picture as Azure does
    assert usage["input_tokens_details"]["image_tokens"] == 65 + 2 * 129 + 6144
    [record] = [r for r in records(gateway)
                if r.key_id == key_id and r.route == "images/edits" and r.status == 200]
    text = usage["input_tokens_details"]["text_tokens"]
    assert record.cost_usd == pytest.approx(
        (text * 5.00 + (65 + 2 * 129 + 6144) * 10.00 + 272 * 40.00) / 1e6)

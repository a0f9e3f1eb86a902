"""Session 20's review of the estimate of unit-priced requests sent and never answered
(merge 644fe98): what each is recorded and spent at. The official `openai` SDK through
the gateway to the emulator, whose answer is held back (its `hang` fault) until the
client has left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_with
from tests.e2e.test_ledger import _virtual_key, ledger_gateway  # noqa: F401
from tests.e2e.test_s19_unanswered_units import _abandon, _client, _left
from tests.support import ServerThread


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The emulator with a gpt-4o-mini-tts deployment (`mini-tts`) beside its own."""
    with emulator_with(EmulatedDeployment("mini-tts", "gpt-4o-mini-tts-2025-03-20", "speech")) as emulator:
        yield emulator


def _deployments(url: str, **more: str) -> list[dict[str, str]]:
    """The usual deployments, and `more` (model: deployment) beside them."""
    return [{"model_name": model, "deployment_name": deployment, "endpoint": url,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for model, deployment in {**MODELS, **more}.items()]


def _spent(gateway: ServerThread, key_id: str) -> float:
    """What the key's budget counts spent this period."""
    guard = gateway.app.gateway.budgets  # type: ignore[attr-defined]
    return float(guard.spent(("key", key_id), "daily"))


@pytest.mark.parametrize("model, usd", [
    ("tts-1", 1000 * 15.0 / 1e6),  # tts: $15 per 1M characters
    # priced by tokens only (no price a character): its hold, as before 644fe98
    ("gpt-4o-mini-tts", None),
])
def test_a_soft_budget_records_and_spends_an_abandoned_speech(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
    model: str, usd: float | None,
) -> None:
    gateway = ledger_gateway(emulator, deployment_config=_deployments(
        emulator.url, **{"gpt-4o-mini-tts": "mini-tts"}))
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "soft", soft_budget_usd=5.0,
                                  budget_period="daily")
    emulator.fault("*", "hang", count=1, seconds=3)
    _abandon(lambda: _client(gateway, secret).audio.speech.create(
        model=model, voice="alloy", input="x" * 1000))
    [speech] = _left(gateway, "audio/speech")
    assert (speech.status, speech.usage_source) == (499, "estimated")
    # on main: gpt-4o-mini-tts's $0, unpriced (its characters have no price)
    assert speech.priced and speech.cost_usd > 0, speech
    if usd is not None:
        assert speech.cost_usd == pytest.approx(usd)
    assert _spent(gateway, key_id) == pytest.approx(speech.cost_usd)

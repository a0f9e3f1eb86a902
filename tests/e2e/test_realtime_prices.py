"""A Realtime response with audio, through the gateway with the ledger on: its record's
cost is the price table's audio arithmetic on Azure's (the emulator's) usage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from openai import OpenAI
from openai.types.beta.realtime import ResponseDoneEvent

from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.ledger import LedgerStore
from tests.e2e.conftest import Emulator
from tests.e2e.test_realtime import DATED, realtime_settings, virtual_key, ws_url
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(realtime_settings(
        emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}"))


def test_a_realtime_audio_response_is_priced_at_the_audio_rates(
    governed: ServerThread, tmp_path: Path,
) -> None:
    _, secret = virtual_key(governed, tmp_path / "gw.db")
    client = OpenAI(base_url=governed.url + "/v1", api_key=secret, max_retries=0,
                    websocket_base_url=ws_url(governed, "/v1"))
    with client.beta.realtime.connect(model=DATED) as connection:
        connection.session.update(session={"modalities": ["text", "audio"]})
        connection.response.create()
        for event in connection:
            assert event.type != "error", event
            if isinstance(event, ResponseDoneEvent):
                break
    assert isinstance(event, ResponseDoneEvent)
    usage = event.response.usage
    assert usage is not None and usage.output_token_details is not None
    assert usage.input_token_details is not None
    audio_out = usage.output_token_details.audio_tokens or 0
    audio_in = usage.input_token_details.audio_tokens or 0
    assert audio_out > 0
    app = governed.app
    assert isinstance(app, GatewayApp) and app.ledger is not None
    assert app.ledger.flush()
    store = LedgerStore.open(app.ledger.database)
    try:
        [record] = [r for r in store.records() if r.route == "realtime"]
    finally:
        store.close()
    # gpt-4o-realtime-preview, shipped: text $5 in, $20 out; audio $40 in, $80 out (no
    # cached tokens in the emulator's usage)
    text_in = (usage.input_tokens or 0) - audio_in
    text_out = (usage.output_tokens or 0) - audio_out
    expected = (text_in * 5.0 + audio_in * 40.0 + text_out * 20.0 + audio_out * 80.0) / 1e6
    assert record.priced and record.cost_usd == pytest.approx(expected, abs=1e-12)

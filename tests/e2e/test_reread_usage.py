"""A stored response read back is not billed again (independent review of issue 13): the
relay records any JSON answer's `usage`, so each `GET /v1/responses/{id}` charged the
key's ledger and budget with the whole generation once more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread


def _tokens(rows: list[UsageRecord], key_id: str) -> tuple[int, int, float]:
    mine = [r for r in rows if r.key_id == key_id]
    return (sum(r.prompt_tokens for r in mine), sum(r.completion_tokens for r in mine),
            round(sum(r.cost_usd for r in mine), 9))


def test_reading_a_response_back_costs_nothing_more(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "reader")
    client = sdk(gateway, secret)
    made = client.responses.create(model="gpt-4o", input="hello", max_output_tokens=16)
    assert made.usage is not None
    once = _tokens(records(gateway), key_id)
    assert once[:2] == (made.usage.input_tokens, made.usage.output_tokens)
    for _ in range(3):
        read = client.responses.retrieve(made.id)
        assert read.usage is not None and read.usage.output_tokens == made.usage.output_tokens
    assert _tokens(records(gateway), key_id) == once  # three reads: no token, no cent more

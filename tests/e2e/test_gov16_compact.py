"""A compaction (`POST /v1/responses/compact`) is a billed model call: a key with a
budget is served it (refused in session 15, while its hold was not made), its cost held
like a Responses call's (its input, the context its `previous_response_id` chains to,
its output), its TPM taken the same way, and its record written with Azure's usage
exactly, priced by the table; a spent budget then stops the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _DEAR, _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread

HI: Any = [{"role": "user", "content": "hello there, how are you"}]


def test_a_compaction_is_recorded_priced_and_counts_against_the_budget(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "budget", budget_usd=5.0,
                                  budget_period="daily")
    client = sdk(gateway, secret)
    first = client.responses.create(model="gpt-4o", input=HI)
    compacted = client.responses.compact(model="gpt-4o", previous_response_id=first.id)
    usage = compacted.usage
    assert usage.output_tokens > 0
    mine = [r for r in records(gateway)
            if r.key_id == key_id and r.status == 200 and r.route == "responses"]
    assert len(mine) == 2  # the response, then its compaction
    record = max(mine, key=lambda r: r.time)
    assert (record.prompt_tokens, record.completion_tokens) == (
        usage.input_tokens, usage.output_tokens)
    assert record.usage_source == "measured" and record.priced
    cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0
    assert record.cached_tokens == cached
    # gpt-4o: $2.50 in, $1.25 cached in, $10.00 out per 1M tokens (prices.yaml)
    expected = ((usage.input_tokens - cached) * 2.50 + cached * 1.25
                + usage.output_tokens * 10.00) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-9) and record.cost_usd > 0


def test_a_spent_budget_stops_compactions(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)  # every call costs more than a cent
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", budget_usd=0.01,
                             budget_period="daily")
    client = sdk(gateway, secret, retries=3)
    client.responses.compact(model="gpt-4o", input=HI)
    records(gateway)  # written: the book has its cost
    served = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.compact(model="gpt-4o", input=HI)
    assert refused.value.code == "insufficient_quota"
    assert len(emulator.requests()) == served  # Azure never saw it, the SDK did not retry


def test_a_compaction_reserves_the_context_it_chains_to(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    """Its TPM reservation counts the previous response's context, as a Responses call
    chained to it does: a compaction of a long conversation is refused by a TPM that a
    compaction of nothing fits in."""
    gateway = ledger_gateway(emulator)
    long_input: Any = [{"role": "user", "content": "word " * 4000}]
    _, probe = _virtual_key(gateway, tmp_path / "gw.db", "probe")
    seen = sdk(gateway, probe).responses.create(model="gpt-4o", input=long_input,
                                                  max_output_tokens=16)
    assert seen.usage is not None
    context = seen.usage.total_tokens
    assert context > 2_000
    # Room for the first call and, after it, for context/2 + 1,100 more: a compaction of
    # nothing (its default output, 1,024) fits; one that reads the context does not.
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "tpm",
                             tpm=context + context // 2 + 1_100)
    client = sdk(gateway, secret)
    first = client.responses.create(model="gpt-4o", input=long_input, max_output_tokens=16)
    served = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.compact(model="gpt-4o", previous_response_id=first.id)
    assert refused.value.code == "rate_limit_exceeded"
    assert len(emulator.requests()) == served  # refused before Azure
    assert client.responses.compact(model="gpt-4o", input=HI).usage.output_tokens > 0

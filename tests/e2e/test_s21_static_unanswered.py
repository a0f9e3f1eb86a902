"""A static client key's (`client_keys`, no virtual key) text request that Azure received
and never answered (its client left first) is recorded in the ledger with the same
flagged estimate as a virtual key's: its prompt and, non-streamed, the most output Azure
may finish and bill. It was recorded with no usage, $0 and unpriced (issue 13: "never
zero, never missing"): only a unit-priced route (pictures, speech, a transcription) was
estimated for a static key. The official `openai` SDK through the gateway to the
emulator, whose answer is held back (its `hang` fault) until the client has left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.e2e.test_s19_unanswered_units import _abandon, _client, _left
from tests.support import ServerThread

_PROMPT = "abcd" * 10  # 10 tokens at four characters a token

# route -> (deployment to hang, the call as the SDK makes it, (prompt, completion) tokens
# estimated: the prompt (chat's messages count 4 more) and the most output asked)
_CALLS: dict[str, tuple[str, Callable[[openai.OpenAI], object], tuple[int, int]]] = {
    "chat/completions": ("gpt-4o", lambda c: c.chat.completions.create(
        model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": _PROMPT}]),
        (14, 50)),
    "completions": ("gpt-35-turbo-instruct", lambda c: c.completions.create(
        model="gpt-3.5-turbo-instruct", max_tokens=40, prompt=_PROMPT), (10, 40)),
    "responses": ("gpt-4o", lambda c: c.responses.create(
        model="gpt-4o", max_output_tokens=30, input=_PROMPT), (10, 30)),
    "embeddings": ("text-embedding-3-small", lambda c: c.embeddings.create(
        model="text-embedding-3-small", input=_PROMPT), (10, 0)),
}


@pytest.mark.parametrize("route", sorted(_CALLS))
def test_a_static_keys_unanswered_text_request_is_recorded_as_a_virtual_keys_is(
    route: str, emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = ledger_gateway(emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "free")
    deployment, call, tokens = _CALLS[route]
    emulator.fault(deployment, "hang", count=2, seconds=3)
    for key in (secret, CLIENT_KEY):
        _abandon(lambda key=key: call(_client(gateway, key)))  # type: ignore[misc]
    mine, static = sorted(_left(gateway, route, 2), key=lambda r: r.key_id is None)
    assert mine.key_id == key_id and static.key_id is None, (mine, static)
    assert mine.status == static.status == 499, (mine, static)
    assert (mine.usage_source, mine.priced) == ("estimated", True), mine
    assert (mine.prompt_tokens, mine.completion_tokens) == tokens and mine.cost_usd > 0, mine
    # on main: the static key's 0 tokens, $0, usage "none"
    assert (static.prompt_tokens, static.completion_tokens, static.usage_source,
            static.priced) == (mine.prompt_tokens, mine.completion_tokens, "estimated",
                               True), (mine, static)
    assert static.cost_usd == pytest.approx(mine.cost_usd), (mine, static)


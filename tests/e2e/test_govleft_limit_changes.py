"""An operator changes a key in debt through the admin API of a two-worker gateway process:
a raised TPM lets it through at once, on both workers (the raise is added to what is
left: main kept the debt, refilled at the new rate), and a TPM removed then set again
starts with a full minute, as with one worker (main: the shared row kept the debt); a
TPM raised while in debt and lowered again holds the next debt on both workers (session
26: one worker, whose reload skipped the raise, wrote the raise it had followed back to
the shared row, tests/unit/test_govleft_limit_changes.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.test_govleft_limit_reset import PROMPT, _chat, key_of_3000_tpm


def test_a_raised_or_reset_tpm_lets_a_key_in_debt_through_on_every_worker(
        tmp_path: Path) -> None:
    with key_of_3000_tpm(tmp_path) as (port, secret, admin, key_id):
        assert _chat(port, secret, PROMPT) == 200  # ~8,000 billed: ~5,000 owed
        assert [_chat(port, secret, "hi") for _ in range(4)] == [429] * 4
        raised = admin.patch(f"/admin/keys/{key_id}", json={"tpm": 30_000})
        assert raised.status_code == 200, raised.text
        assert [_chat(port, secret, "hi") for _ in range(6)] == [200] * 6
        for change in ({"tpm": None}, {"tpm": 3000}):  # removed, then set again
            assert admin.patch(f"/admin/keys/{key_id}", json=change).status_code == 200
        assert [_chat(port, secret, "hi") for _ in range(6)] == [200] * 6


def test_a_lowered_tpm_holds_the_next_debt_on_every_worker(tmp_path: Path) -> None:
    with key_of_3000_tpm(tmp_path) as (port, secret, admin, key_id):
        assert _chat(port, secret, PROMPT) == 200  # ~8,000 billed: ~5,000 owed
        assert admin.patch(f"/admin/keys/{key_id}", json={"tpm": 30_000}).status_code == 200
        assert [_chat(port, secret, "hi") for _ in range(6)] == [200] * 6
        assert admin.patch(f"/admin/keys/{key_id}", json={"tpm": 3000}).status_code == 200
        time.sleep(1.5)  # both workers reloaded (their key directories poll every 0.5 s)
        assert _chat(port, secret, PROMPT) == 200  # in debt again
        assert [_chat(port, secret, "hi") for _ in range(4)] == [429] * 4

"""An operator changes a key in debt through the admin API of a two-worker gateway process:
a raised TPM lets it through at once, on both workers (the raise is added to what is
left: main kept the debt, refilled at the new rate), and a TPM removed then set again
starts with a full minute, as with one worker (main: the shared row kept the debt)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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


@pytest.mark.xfail(strict=False, reason=(
    "known defect (session 26): with --workers 2, a TPM raised while the key owed a debt "
    "and then lowered does not hold the next debt: the 'hi' requests after it pass (1 run "
    "in ~5 under load right after the lowering; every run once both workers have "
    "reloaded); with one worker it holds (tests/unit/test_govleft_limit_changes.py)"))
def test_a_lowered_tpm_holds_the_next_debt_on_every_worker(tmp_path: Path) -> None:
    with key_of_3000_tpm(tmp_path) as (port, secret, admin, key_id):
        assert _chat(port, secret, PROMPT) == 200  # ~8,000 billed: ~5,000 owed
        assert admin.patch(f"/admin/keys/{key_id}", json={"tpm": 30_000}).status_code == 200
        assert [_chat(port, secret, "hi") for _ in range(6)] == [200] * 6
        assert admin.patch(f"/admin/keys/{key_id}", json={"tpm": 3000}).status_code == 200
        time.sleep(1.5)  # both workers reloaded (their key directories poll every 0.5 s)
        assert _chat(port, secret, PROMPT) == 200  # in debt again
        assert [_chat(port, secret, "hi") for _ in range(4)] == [429] * 4

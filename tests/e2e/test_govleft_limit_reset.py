"""An operator forgives a key's TPM debt through the admin API of a two-worker gateway
process (`DELETE /admin/limits/key:ID`): Azure billed a prompt four times its estimate
(the emulator counts every punctuation mark a token), the key owes some 5,000 tokens
of a 3,000 TPM and every request is refused by both workers; after the reset (answered
by one of them) both let it through at once. Before, the debt could only be waited out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_shared_limits import two_workers

ADMIN_KEY = "admin-key-0123456789"
PROMPT = "a," * 4000  # 2,000 tokens reserved, ~8,000 billed


@contextlib.contextmanager
def key_of_3000_tpm(tmp_path: Path) -> Iterator[tuple[int, str, httpx.Client, str]]:
    """A two-worker gateway with one key of 3,000 TPM: its port, the key's secret, an
    admin API client and the key's id."""
    with two_workers(tmp_path, Limits(tpm=3000), admin_key=ADMIN_KEY) as (_, _p, client,
                                                                          secret):
        port = client.port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            yield port, secret, admin, admin.get("/admin/keys").json()["data"][0]["id"]


def _chat(port: int, secret: str, content: str) -> int:
    with httpx.Client(timeout=30) as http:  # a connection of its own: either worker
        return http.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "gpt-4o", "max_tokens": 1,
                               "messages": [{"role": "user", "content": content}]}).status_code


def _listed(port: int, subject: str) -> dict[str, object]:
    """`subject`'s entry in GET /admin/limits of a worker that knows it (each call on a
    connection of its own, bounded)."""
    for _ in range(20):
        with httpx.Client(timeout=10) as http:
            data = http.get(f"http://127.0.0.1:{port}/admin/limits",
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
        found = [entry for entry in data if entry["subject"] == subject]
        if found:
            return found[0]
    raise AssertionError(f"no worker lists {subject}")


def test_a_reset_forgives_a_debt_in_every_worker(tmp_path: Path) -> None:
    with key_of_3000_tpm(tmp_path) as (port, secret, admin, key_id):
        subject = "key:" + key_id
        assert _chat(port, secret, PROMPT) == 200  # ~8,000 billed: ~5,000 owed
        assert [_chat(port, secret, "hi") for _ in range(6)] == [429] * 6
        reset = admin.delete(f"/admin/limits/{subject}")
        assert reset.status_code == 200, reset.text
        assert reset.json() == {"object": "limits.reset", "subject": subject, "reset": True}
        assert [_chat(port, secret, "hi") for _ in range(6)] == [200] * 6
        assert _listed(port, subject)["tokens"]["remaining"] > 2900  # type: ignore[index]
        unknown = admin.delete("/admin/limits/key:nobody")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert admin.delete("/admin/limits/nobody").status_code == 400
        assert admin.get(f"/admin/limits/{subject}").status_code == 405

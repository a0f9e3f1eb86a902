"""A request about an object goes to the resource that made it (gateway/poolchoice.py
`_sticky`): to a deployment there of the model it names, else to the deployment that made
it, which a virtual key's allow-list judges by the model it serves, not by the model
name the request sent."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway
from tests.support import load_keys_now
from tests.waiting import until

DEPLOYMENTS = (
    EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat", rpm=60_000),
    EmulatedDeployment("Llama-3-70B", "Llama-3-70B-Instruct", "chat", rpm=60_000),
)


def test_an_object_on_a_deployment_the_key_may_not_use_is_not_reached_by_another_name(
        tmp_path: Path) -> None:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        azure = {"endpoint": emulator.url, "api_key": AZURE_KEY,
                 "api_version": "2025-04-01-preview"}
        database = tmp_path / "gateway.db"
        raw = load_settings({"models": {
            "gpt-4o": [{"deployment_name": "gpt-4o", **azure}],  # where uploads go
            "other": [{"deployment_name": "Llama-3-70B", **azure}],
        }, "client_keys": ["client-key-0123456789"]}, {}).model_dump()
        settings = Settings.model_validate(
            {**raw, "database": f"sqlite://{database}", "admin_key": "admin-key-0123456789"})
        with pool_gateway(settings, FakeClock()) as gateway:
            store = KeyStore.open(database)
            try:
                # Allowed both at first: its upload lands on gpt-4o's resource (the first
                # pool it may use). Then its allow-list shrinks to `other`.
                key, secret = store.create_key("other-only", models=("gpt-4o", "other"),
                                               now=time.time())
                client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret,
                                       max_retries=0)
                load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
                until(lambda: _models(gateway.url, secret) == ["gpt-4o", "other"],
                      timeout=10, message="the gateway never loaded the new key")
                file = client.files.create(file=("notes.txt", b"hello", "text/plain"),
                                           purpose="assistants")
                assert emulator.requests()[-1]["path"] == "/openai/files"
                store.update_key(key.id, {"models": ("other",)})
            finally:
                store.close()
            until(lambda: _models(gateway.url, secret) == ["other"], timeout=10,
                  message="the gateway never loaded the key's new allow-list")
            # The file's resource serves `other` too: its deployment there runs the call
            # (the object lives on the resource), never the gpt-4o one that made it.
            answer = client.responses.create(model="other", input=[{"role": "user", "content": [
                {"type": "input_file", "file_id": file.id}]}])
            assert answer.output_text
            sent = [r for r in emulator.requests() if r["path"] == "/openai/responses"]
            assert [r["json"]["model"] for r in sent] == ["Llama-3-70B"]
            assert all(r.get("deployment") != "gpt-4o" for r in sent)


def _models(url: str, secret: str) -> list[str] | None:
    answer = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {secret}"})
    return [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else None

"""Session 24's audit of what a body names beside its `model`: a chat's `data_sources`
(Azure's On Your Data) name, in an `embedding_dependency` of type `deployment_name`, a
deployment of the resource that Azure runs (and bills) to embed the query. A key allowed
only `gpt-4o` had it run `text-embedding-3-small`: the chat's `model` was judged, that
deployment never. Now it is judged as a hosted image tool's deployment is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin


def _chat(embedding: str, field: str = "deployment_name") -> dict[str, Any]:
    source = {"type": "azure_search", "parameters": {
        "endpoint": "https://search.example", "index_name": "docs",
        "authentication": {"type": "system_assigned_managed_identity"},
        "embedding_dependency": {"type": "deployment_name", field: embedding}}}
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "data_sources": [source]}


def _sent(emulator: Emulator) -> int:
    return sum(1 for seen in emulator.requests() if "data_sources" in seen["body"])


def test_a_data_sources_embedding_deployment_is_judged_by_the_allow_list(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        only = admin.post("/admin/keys", json={"name": "a", "models": ["gpt-4o"]}).json()
        # with limits too: a plain chat of such a key takes the pipeline's short path
        limited = admin.post("/admin/keys", json={"name": "l", "models": ["gpt-4o"],
                                                  "rpm": 1000, "tpm": 1_000_000}).json()
        both = admin.post("/admin/keys", json={
            "name": "b", "models": ["gpt-4o", "text-embedding-3-small"]}).json()
        for _ in range(2):  # the limiter now knows the key: its plain chats' short path
            plain = {k: v for k, v in _chat("gpt-4o").items() if k != "data_sources"}
            assert httpx.post(url + "/v1/chat/completions", json=plain, timeout=30, headers={
                "Authorization": f"Bearer {limited['key']}"}).status_code == 200
        for name, field, key in (("text-embedding-3-small", "deployment_name", only),
                                 ("o3-mini", "Deployment_Name", only),  # any letters
                                 ("text-embedding-3-small", "deployment_name", limited)):
            for _ in range(2):
                refused = httpx.post(url + "/v1/chat/completions", json=_chat(name, field),
                                     headers={"Authorization": f"Bearer {key['key']}"},
                                     timeout=30)
                assert refused.status_code == 404, refused.text  # main: sent to Azure
                error = refused.json()["error"]
                assert error["code"] == "model_not_found" and f"`{name}`" in error["message"]
                assert error["param"] == "data_sources", error  # main: `model`, the chat's
        assert _sent(emulator) == 0
        allowed = httpx.post(url + "/v1/chat/completions", json=_chat("text-embedding-3-small"),
                             headers={"Authorization": f"Bearer {both['key']}"}, timeout=30)
        assert allowed.status_code != 404 or "text-embedding" not in allowed.text
        assert _sent(emulator) == 1

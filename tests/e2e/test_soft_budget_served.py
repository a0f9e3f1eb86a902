"""A key with a soft budget alone is served what a key with a budget is refused (review
of the issue 13 fixes): a soft budget only warns (`x-aop-budget-warning`), it never
stops a request, so the refusals of what a budget could not stop (a background
response, an Assistants run, a model without a price) are not its. They hit it since
those fixes read "a budget" as hard or soft, where a batch, refused for the same reason,
reads the hard one (gateway/batchcheck.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_unpriced_budget import HELLO, _deployments, emulator  # noqa: F401
from tests.e2e.test_virtual_keys import Governed
from tests.support import ServerThread


@pytest.mark.parametrize("limits, served", [
    (Limits(soft_budget_usd=0.0005, budget_period="daily"), True),
    (Limits(budget_usd=100.0, budget_period="daily"), False),
])
def test_a_soft_budget_alone_refuses_nothing(
        tmp_path: Path, emulator: Emulator, limits: Limits, served: bool) -> None:  # noqa: F811
    database = tmp_path / "gateway.db"
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                deployment_config=_deployments(emulator.url))
    server = ServerThread(lambda: create_app(settings)).start()
    store = KeyStore.open(database)
    try:
        governed = Governed(server, database, store)
        key_id, secret = governed.key("watched", limits=limits)
        client = governed.client(secret)
        owners = server.app.gateway.owners

        async def made() -> None:  # as if the key had created them
            for object_id in ("asst_1", "thread_1"):
                await owners.remember(object_id, Owned(key_id))

        server.call(made)
        calls = {
            "model_not_priced": lambda: client.chat.completions.create(
                model="team-finetune", messages=HELLO),
            "not_metered": lambda: client.responses.create(
                model="gpt-4o", input="hi", background=True),
        }
        for code, call in calls.items():
            if served:
                assert call().id
            else:
                with pytest.raises(Exception) as refused:
                    call()
                assert getattr(refused.value, "code", None) == code
        run = httpx.post(server.url + "/v1/threads/thread_1/runs",
                         json={"assistant_id": "asst_1"}, headers={"api-key": secret})
        assert (run.status_code != 403) is served, run.text
    finally:
        store.close()
        server.stop()

"""A request its budget refuses never reaches Azure, so it spends none of its key's
requests per minute: a key of RPM 3 refused five times for budget, then given budget
through the admin API, has its three requests a minute all there (before, each budget
refusal after its limits let it through took one of them). A spent budget is refused
before the limits are asked (`enforce_budget`); the hold's refusals come after them: a
model without a price (403 `model_not_priced`) is the one a test can make at will."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_admin_api import Admin
from tests.e2e.test_unpriced_budget import _deployments
from tests.e2e.test_unpriced_budget import emulator as unpriced_emulator  # noqa: F401
from tests.e2e.test_virtual_keys import HELLO, Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def test_budget_refusals_spend_no_request_per_minute(governed: Governed) -> None:
    admin = Admin(governed.server.url)
    # A budget no request fits (a chat's hold is far above a millionth of a cent).
    created = admin("POST", "/admin/keys", {"name": "tight", "rpm": 3,
                                            "budget_usd": 1e-9, "budget_period": "daily"},
                    status=201)
    client = governed.client(created["key"])
    for _ in range(5):
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
        assert refused.value.code == "insufficient_quota"
    admin("PATCH", f"/admin/keys/{created['id']}", {"budget_usd": 10.0})
    for _ in range(3):  # the key's three requests of the minute: none was spent
        answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=5)
        assert answer.status_code == 200
    with pytest.raises(openai.RateLimitError) as limited:  # and no more than three
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
    assert limited.value.code == "rate_limit_exceeded"
    assert httpx.get(governed.server.url + "/v1/models",
                     headers={"Authorization": f"Bearer {created['key']}"}).status_code == 429


def test_hold_refusals_spend_no_request_per_minute(tmp_path: Path,
                                                   unpriced_emulator: Emulator) -> None:  # noqa: F811
    """Refused by its budget's hold (after the limits took the request): five times."""
    database = tmp_path / "gateway.db"
    settings = gateway_settings(unpriced_emulator.url, database=f"sqlite://{database}",
                                deployment_config=_deployments(unpriced_emulator.url))
    server = ServerThread(lambda: create_app(settings)).start()
    store = KeyStore.open(database)
    try:
        governed = Governed(server, database, store)
        _, secret = governed.key("tight", limits=Limits(rpm=3, budget_usd=10.0,
                                                        budget_period="daily"))
        client = governed.client(secret)
        for _ in range(5):
            with pytest.raises(openai.PermissionDeniedError) as refused:
                client.chat.completions.create(model="team-finetune", messages=HELLO)
            assert refused.value.code == "model_not_priced"
        for _ in range(3):  # five refusals later, the key's three requests are all there
            assert client.chat.completions.create(
                model="gpt-4o", messages=HELLO, max_tokens=5).choices
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
        assert limited.value.code == "rate_limit_exceeded"
    finally:
        store.close()
        server.stop()

"""Session 23's review of the admin API audit: since GET /admin/usage asks the admin API
first (650d31e, a client key's 403), a reload that changed `admin_key` locked the usage
out for both keys: /admin/keys compared the key read at start, /admin/usage then the
reloaded one, so neither opened it (401) until a restart. Now every admin route reads the
key in force: a reload rotates it (the old one stops working) or, removed, turns the
admin API off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import SecretStr

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_admin_api import chat_status
from tests.e2e.test_reload_shutdown import reload
from tests.e2e.test_virtual_keys import ADMIN_KEY
from tests.support import ServerThread
from tests.waiting import until

ROTATED = "rotated-admin-key-0123456789"
ROUTES = ("/admin/keys", "/admin/teams", "/admin/limits", "/admin/usage")


def _statuses(url: str, key: str) -> list[int]:
    return [httpx.get(url + path, headers={"Authorization": f"Bearer {key}"}).status_code
            for path in ROUTES]


def test_a_reloaded_admin_key_opens_every_admin_route_and_the_old_one_none(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    settings = gateway_settings(emulator.url, database=f"sqlite://{tmp_path}/gw.db",
                                admin_key=ADMIN_KEY)
    server = start_gateway(settings)
    assert _statuses(server.url, ADMIN_KEY) == [200] * 4
    reload(server, settings.model_copy(update={"admin_key": SecretStr(ROTATED)}))
    assert _statuses(server.url, ROTATED) == [200] * 4  # main: 401 everywhere
    assert _statuses(server.url, ADMIN_KEY) == [401] * 4  # main: 200 but on /admin/usage
    reload(server, settings.model_copy(update={"admin_key": None}))
    assert _statuses(server.url, ROTATED) == [404] * 4  # main: 200 but on /admin/usage


def test_a_reload_naming_another_database_leaves_the_usage_on_the_ledger(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    """The key directory and the ledger keep the database opened at start; GET
    /admin/usage read the reloaded settings' one instead: a new, empty database (every
    total gone), or a 500 for a URL the store refuses."""
    settings = gateway_settings(emulator.url, database=f"sqlite://{tmp_path}/gw.db",
                                admin_key=ADMIN_KEY)
    server = start_gateway(settings)
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    secret = admin.post("/admin/keys", json={"name": "user"}).json()["key"]
    assert chat_status(server.url, secret) == 200
    until(lambda: admin.get("/admin/usage").json()["data"], message="no usage recorded")
    usage = admin.get("/admin/usage").json()["data"]
    reload(server, settings.model_copy(update={"database": f"sqlite://{tmp_path}/other.db"}))
    assert admin.get("/admin/usage").json()["data"] == usage  # main: [] (other.db made)
    assert not (tmp_path / "other.db").exists()


def test_a_reload_that_adds_an_admin_key_opens_every_admin_route(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    """Governance on (a database) with no admin key at start: the admin API was never
    built, so a reload that added `admin_key` opened /admin/usage alone (it reads the
    settings in force) and /admin/keys, /admin/teams and /admin/limits stayed 404 until a
    restart."""
    settings = gateway_settings(emulator.url, database=f"sqlite://{tmp_path}/gw.db")
    server = start_gateway(settings)
    assert _statuses(server.url, ADMIN_KEY) == [404] * 4
    reload(server, settings.model_copy(update={"admin_key": SecretStr(ADMIN_KEY)}))
    assert _statuses(server.url, ADMIN_KEY) == [200] * 4  # main: [404, 404, 404, 200]
    body = httpx.get(server.url + "/admin/keys").json()  # no key: the API asks for one
    assert body["error"]["message"].startswith("The admin API needs"), body

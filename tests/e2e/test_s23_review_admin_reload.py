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
from tests.e2e.test_reload_shutdown import reload
from tests.e2e.test_virtual_keys import ADMIN_KEY
from tests.support import ServerThread

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

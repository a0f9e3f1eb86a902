"""Review of session 17 (bad input): the admin API answers a key or team whose `metadata` is nested 254+ levels
(orjson parses up to 1,024, writes up to 254) with 503 `store_unavailable` "The key store
is unavailable (TypeError)": client input reported as a database outage, a 5xx (alerts,
retries), where a 400 naming `metadata` is due. `gateway/admin.py` `_read` turns every
exception of the store (`orjson.dumps` in store/keys.py) into 503. The CLI's
`keys create --metadata` prints a traceback for the same input."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, emulator, gateway_settings, start_gateway  # noqa: F401
from tests.support import ServerThread

ADMIN = "admin-key-for-tests-abcdef"


def test_deep_metadata_is_a_400_not_a_store_outage(
        tmp_path: Path, emulator: Emulator,  # noqa: F811
        start_gateway: Callable[[Settings], ServerThread]) -> None:  # noqa: F811
    server = start_gateway(gateway_settings(
        emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}", admin_key=ADMIN))
    deep = '{"a":' * 300 + "1" + "}" * 300
    for path in ("/admin/keys", "/admin/teams"):
        answer = httpx.post(server.url + path, headers={"Authorization": f"Bearer {ADMIN}"},
                            content='{"name":"deep","metadata":{"m":' + deep + "}}", timeout=10)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)  # main: 503
        assert answer.json()["error"]["param"] in (None, "metadata")

"""The admin API under /admin/: keys and teams through HTTP, in force at once."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_virtual_keys import ADMIN_KEY, HELLO, Governed, governed_gateway
from tests.support import ServerThread
from tests.waiting import until

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


class Admin:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers=ADMIN, timeout=30)

    def __call__(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.http.request(method, path, json=body)
        assert response.status_code == status, response.text
        return response.json()


@contextmanager
def governed_admin(tmp_path: Path, emulator_url: str, start_gateway: Callable[[Settings], ServerThread],
                   ) -> Iterator[tuple[str, httpx.Client]]:
    """A governed gateway's URL, and a client that sends its admin key."""
    with governed_gateway(tmp_path, emulator_url, start_gateway) as governed:
        yield governed.server.url, Admin(governed.server.url).http


def chat_status(url: str, secret: str, model: str = "gpt-4o") -> int:
    return httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": model, "messages": HELLO}, timeout=30).status_code


def test_keys_and_teams_crud_in_force_at_once(governed: Governed,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = governed.server.url
    admin = Admin(url)
    team = admin("POST", "/admin/teams", {"name": "research", "rpm": 100}, status=201)
    assert team["limits"]["rpm"] == 100 and team["id"].startswith("team_")
    created = admin("POST", "/admin/keys", {"name": "ann", "team": "research",
                                            "models": ["gpt-4o"], "tpm": 50_000,
                                            "expires": "30d", "metadata": {"dept": 7}},
                    status=201)
    secret, key_id = created["key"], created["id"]
    assert secret.startswith("sk-aop-") and created["prefix"] == secret[:13]
    assert created["team_id"] == team["id"] and created["limits"]["tpm"] == 50_000
    # In force when the answer arrives: no waiting for a poll.
    assert chat_status(url, secret) == 200
    assert chat_status(url, secret, "o3-mini") == 404
    shown = admin("GET", f"/admin/keys/{key_id}")
    listed = admin("GET", "/admin/keys")["data"]
    assert "key" not in shown and listed == [shown] and shown["metadata"] == {"dept": 7}
    assert admin("GET", "/admin/keys/ann")["id"] == key_id  # by name too

    admin("PATCH", f"/admin/keys/{key_id}", {"models": [], "rpm": 10})
    assert chat_status(url, secret, "o3-mini") == 200
    assert admin("GET", f"/admin/keys/{key_id}")["limits"]["tpm"] == 50_000  # kept

    rotated = admin("POST", f"/admin/keys/{key_id}/rotate", {"grace_seconds": 3600})
    assert rotated["key"] != secret and chat_status(url, rotated["key"]) == 200
    assert chat_status(url, secret) == 200  # the grace period
    admin("POST", f"/admin/keys/{key_id}/rotate", {})
    assert chat_status(url, secret) == 401 and chat_status(url, rotated["key"]) == 401

    limits = admin("GET", "/admin/limits")["data"]
    mine = next(s for s in limits if s["subject"] == f"key:{key_id}")
    assert mine["requests"]["limit"] == 10 and mine["in_flight"] == 0

    admin("PATCH", f"/admin/teams/{team['id']}", {"blocked": True})
    newest = admin("POST", "/admin/keys", {"name": "bob", "team": team["id"]}, status=201)["key"]
    assert chat_status(url, newest) == 401  # its team is blocked
    admin("PATCH", "/admin/teams/research", {"blocked": False})
    assert chat_status(url, newest) == 200

    assert admin("DELETE", f"/admin/keys/{key_id}")["deleted"] is True
    admin("GET", f"/admin/keys/{key_id}", status=404)
    admin("DELETE", "/admin/teams/research", status=409)  # bob is still in it
    bob = admin("GET", "/admin/keys/bob")["id"]
    admin("DELETE", f"/admin/keys/{bob}")
    assert chat_status(url, newest) == 401
    assert admin("DELETE", "/admin/teams/research")["deleted"] is True
    assert admin("GET", "/admin/teams")["data"] == []
    # No secret ever in a log line.
    for value in (secret, rotated["key"], newest, ADMIN_KEY):
        assert value not in caplog.text


def test_only_the_admin_key_opens_it(governed: Governed) -> None:
    url = governed.server.url
    _, secret = governed.key("user")
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                            ({"Authorization": f"Bearer {CLIENT_KEY}"}, 403),
                            ({"Authorization": f"Bearer {secret}"}, 403)):
        response = httpx.get(url + "/admin/keys", headers=headers)
        assert response.status_code == status
        body = response.json()["error"]
        assert body["type"] and body["message"] and secret not in response.text


def test_bad_admin_requests_get_openai_shaped_errors(governed: Governed) -> None:
    admin = Admin(governed.server.url)
    for method, path, body, status in (
        ("POST", "/admin/keys", {}, 400),  # no name
        ("POST", "/admin/keys", {"name": "x", "rpm": -1}, 400),
        ("POST", "/admin/keys", {"name": "x", "expires": "soon"}, 400),
        ("POST", "/admin/keys", {"name": "x", "colour": "red"}, 400),
        ("POST", "/admin/keys", {"name": "x", "team": "nope"}, 404),
        ("POST", "/admin/keys", [1, 2], 400),
        ("PUT", "/admin/keys", {}, 405),
        ("GET", "/admin/keys/nope", None, 404),
        ("GET", "/admin/nothing", None, 404),
        ("POST", "/admin/keys/x/rotate", {"grace_seconds": "a"}, 400),
        ("POST", "/admin/teams", {"name": ""}, 400),
    ):
        error = admin(method, path, body, status=status)["error"]
        assert error["message"] and "Traceback" not in error["message"]
    response = admin.http.post("/admin/keys", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_the_admin_api_is_off_without_an_admin_key(gateway: ServerThread) -> None:
    response = httpx.get(gateway.url + "/admin/keys", headers=ADMIN)
    assert response.status_code == 404


def test_the_readme_admin_call_runs_as_printed(governed: Governed) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- readme-admin -->", 1)[1].split("<!-- /readme-admin -->")[0]
    script = block.split("```sh\n", 1)[1].split("```", 1)[0]
    # The one change: the gateway under test listens on its own port, not 8080.
    script = script.replace("localhost:8080", governed.server.url.removeprefix("http://"))
    governed.store.create_team("research", now=0.0)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "ADMIN_KEY": ADMIN_KEY})
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["name"] == "carol" and created["key"].startswith("sk-aop-")
    assert chat_status(governed.server.url, created["key"]) == 200


def test_usage_by_key_names_each_key(governed: Governed) -> None:
    """GET /admin/usage?by=key shows the key's name beside its id (JSON and CSV)."""
    key_id, secret = governed.key("dashboard-app")
    assert chat_status(governed.server.url, secret) == 200
    admin = Admin(governed.server.url)

    def rows() -> list[Any]:
        return [r for r in admin("GET", "/admin/usage?by=key&since=1h")["data"]
                if r["key"] == key_id]

    until(lambda: rows(), timeout=10, message="the ledger never recorded the request")
    assert rows()[0]["name"] == "dashboard-app"
    text = admin.http.get("/admin/usage?by=key&since=1h&format=csv").text
    assert text.splitlines()[0].startswith("key,name,requests,")
    assert f"{key_id},dashboard-app,1," in text

"""A 405 names the methods its target takes in an `Allow` header (RFC 9110 15.5.6: a
server MUST send one with a 405): clients and tools (curl -i, API explorers) read it to
find the right method. Every 405 the gateway wrote had none. Through the gateway: a model
route, a resource route, the model list, the local routes and the admin API."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_admin_api import ADMIN, governed  # noqa: F401  (fixture)
from tests.e2e.test_virtual_keys import Governed

_CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.mark.parametrize(("method", "path", "headers", "allow"), [
    ("GET", "/v1/embeddings", _CLIENT, "POST"),  # (GET chat/completions lists stored ones)
    ("DELETE", "/v1/chat/completions", _CLIENT, "GET, POST, HEAD"),
    ("PUT", "/v1/files", _CLIENT, "GET, POST, DELETE, HEAD"),
    ("DELETE", "/v1/models/gpt-4o", _CLIENT, "GET, HEAD"),
    ("POST", "/health", {}, "GET, HEAD"),
    ("PUT", "/admin/keys", ADMIN, "GET, POST, HEAD"),
    ("HEAD", "/admin/keys/k/rotate", ADMIN, "POST"),
    ("PUT", "/admin/teams/t", ADMIN, "GET, PATCH, DELETE, HEAD"),
    ("POST", "/admin/limits", ADMIN, "GET, HEAD"),
    ("POST", "/admin/usage", ADMIN, "GET, HEAD"),
])
def test_a_405_says_which_methods_its_target_takes(
    governed: Governed, method: str, path: str, headers: dict[str, str], allow: str,  # noqa: F811
) -> None:
    response = httpx.request(method, governed.server.url + path, headers=headers, timeout=30)
    assert response.status_code == 405, (path, response.text)
    assert response.headers.get("allow") == allow, (path, dict(response.headers))  # main: None
    if method != "HEAD":
        assert response.json()["error"]["code"] == "method_not_allowed"

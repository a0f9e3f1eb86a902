"""gateway/admin.py on its own: what a refusal says (the admin API over HTTP is in
tests/e2e/test_admin_api.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import MethodNotAllowed
from azure_openai_proxy.gateway.admin import AdminApi
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.http.request import FastRequest

ADMIN_KEY = "admin-key-0123456789abcdef"


def _request(method: str, target: str) -> FastRequest:
    headers = CIMultiDictProxy(CIMultiDict({"Host": "gw", "Authorization": f"Bearer {ADMIN_KEY}"}))
    return FastRequest(None, method, target, headers, True, True, None, None)  # type: ignore[arg-type]


def _no_caller(headers: object) -> Caller:
    raise AssertionError("the admin key opens: no caller is looked up")


@pytest.mark.parametrize(("method", "target"), [
    ("HEAD", "/admin/keys/key_1/rotate"),  # main: "Method GET is not allowed."
    ("GET", "/admin/keys/key_1/rotate"),
    ("PUT", "/admin/keys"),
    ("PUT", "/admin/teams/t"),
    ("POST", "/admin/limits"),
])
def test_a_405_names_the_method_the_client_sent(tmp_path: Path, method: str, target: str) -> None:
    admin = AdminApi(lambda: ADMIN_KEY, KeyDirectory(tmp_path / "gw.db"), RateLimiter(time.time),
                     _no_caller)
    with pytest.raises(MethodNotAllowed) as refused:
        asyncio.run(admin.handle(_request(method, target)))
    assert str(refused.value) == f"Method {method} is not allowed."
    assert not (tmp_path / "gw.db").exists()  # refused before the store is asked

"""Session 23's adversarial audit: an allow-list's patterns are shell patterns, which
`fnmatch` compiles to a regular expression on the event loop at the key's first request
in each worker. Their length and number were not bounded (only the admin body's 1 MiB):
one 200,000-character `*a*a...b` took ~3.7 s to compile, every other client of the worker
waiting. Now a name or pattern is at most 256 characters (as a model name is: a longer
one matches nothing) and a list at most 128 of them; such a pattern compiles in ~7 ms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.governance.keys import MAX_PATTERNS
from azure_openai_proxy.routing import MAX_MODEL_NAME
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status, governed_admin

LONG = "*a" * 100_000 + "b"


def test_an_allow_list_past_its_bounds_is_refused(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        for models in ([LONG], LONG, ["gpt-4o", "x" * (MAX_MODEL_NAME + 1)],
                       [f"m{i}" for i in range(MAX_PATTERNS + 1)]):
            made = admin.post("/admin/keys", json={"name": "slow", "models": models})
            assert made.status_code == 400, made.text[:200]  # main: 201
            assert "models" in made.json()["error"]["message"] or \
                "pattern" in made.json()["error"]["message"]
        assert admin.get("/admin/keys").json()["data"] == []
        # At the bounds: taken, and the key works.
        edge = ["*a" * (MAX_MODEL_NAME // 2)] * (MAX_PATTERNS - 1) + ["gpt-4o"]
        made = admin.post("/admin/keys", json={"name": "edge", "models": edge})
        assert made.status_code == 201, made.text[:200]
        assert chat_status(url, made.json()["key"]) == 200
        assert chat_status(url, made.json()["key"], "o3-mini") == 404


@pytest.mark.parametrize("models", [LONG[:MAX_MODEL_NAME + 1],
                                    ",".join(f"m{i}" for i in range(MAX_PATTERNS + 1))])
def test_the_cli_refuses_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  models: str) -> None:
    database = ["--database", f"sqlite:///{tmp_path / 'gw.db'}"]
    assert main(["keys", "create", "--name", "k", "--models", models, *database]) == 2
    err = capsys.readouterr().err
    assert "at most" in err and len(err.splitlines()) == 1

"""Session 23's adversarial audit: an `admin_key` equal to one of `client_keys` (or to an
Azure `api_key`) was taken, and the admin key is compared first, so every client holding
that shared key opened /admin/: it could mint keys without limits, revoke others' and
read the ledger (GET /admin/keys answered it 200). Now a one-line config error that
names no key, for `serve` and `check-config`, from the file or the environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from tests.e2e.test_keys_cli import run

SHARED = "shared-secret-0123456789abcdef"


def _config(tmp_path: Path, **more: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "endpoint": "https://a.openai.azure.com/", "api_key": "azure-key-abcdef0123456789",
        "client_keys": ["client-a-0123456789", "client-b-0123456789"],
        "database": f"sqlite:///{tmp_path / 'gw.db'}", **more}))
    return str(path)


def test_an_admin_key_shared_with_clients_or_azure_is_a_config_error(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    for more in ({"admin_key": "client-b-0123456789"},
                 {"admin_key": "azure-key-abcdef0123456789"},
                 {"admin_key": SHARED, "client_keys": [SHARED]}):
        config = _config(tmp_path, **more)
        for args in (["check-config", "-c", config],  # main: passed (and serve ran)
                     ["-c", config, "-l", f"127.0.0.1:{reserve_port()}"]):
            done = run(*args, env=env, check=False)
            assert done.returncode == 2, (more, args[0], done.stderr[-300:])
            [line] = done.stderr.strip().splitlines()
            assert "admin_key must not be one of client_keys" in line
            assert str(more["admin_key"]) not in done.stderr + done.stdout
    environ = {**env, "AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com/",
               "AZURE_OPENAI_API_KEY": "azure-key-abcdef0123456789",
               "AZURE_OPENAI_PROXY_CLIENT_KEYS": f"other-key-0123456789,{SHARED}",
               "AZURE_OPENAI_PROXY_ADMIN_KEY": SHARED}
    done = run("check-config", env=environ, check=False)
    assert done.returncode == 2 and "admin_key must not" in done.stderr
    assert SHARED not in done.stderr + done.stdout
    # Its own key: taken.
    assert run("check-config", "-c", _config(tmp_path, admin_key=SHARED), env=env,
               check=False).returncode == 0

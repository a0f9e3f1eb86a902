"""Session 23's review of the admin API audit: `admin_key: ""` (or blank, or
`${ADMIN_KEY}` with the variable empty) was taken: governance and the admin API on,
behind a key no client can send (a blank bearer is no key), so nobody could open it and
check-config said nothing. Now one line naming admin_key and what to do. A short admin key
is taken, with a warning from check-config and at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_keys_cli import run
from tests.processes import cli, running
from tests.support import ServerThread

ENV = {"PATH": "/usr/bin:/bin"}


def _config(tmp_path: Path, admin_key: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "endpoint": "https://a.openai.azure.com/", "api_key": "azure-key-abcdef0123456789",
        "client_keys": ["client-a-0123456789"], "database": f"sqlite:///{tmp_path / 'gw.db'}",
        "admin_key": admin_key}))
    return str(path)


def test_an_empty_or_blank_admin_key_is_a_config_error(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    for admin_key, env in (("", ENV), ("   ", ENV), ("${ADMIN_KEY}", {**ENV, "ADMIN_KEY": ""})):
        config = _config(tmp_path, admin_key)
        for args in (["check-config", "-c", config],  # main: 0, the admin API on
                     ["-c", config, "-l", f"127.0.0.1:{reserve_port()}"]):
            done = run(*args, env=env, check=False)
            assert done.returncode == 2, (admin_key, args[0], done.stderr[-300:])
            [line] = done.stderr.strip().splitlines()
            assert "config error: admin_key: is empty" in line, line
            assert "remove admin_key to turn the admin API off" in line
    assert not (tmp_path / "gw.db").exists()


def test_a_short_admin_key_is_warned_about(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    short = "admin123"
    done = run("check-config", "-c", _config(tmp_path, short), env=ENV)
    warnings = [line for line in done.stdout.splitlines() if "admin_key" in line]
    assert warnings == ["WARNING: admin_key is shorter than 16 characters: whoever guesses it "
                        "can mint keys without limits; use a long random one (openssl rand -hex 24)"]
    assert short not in done.stdout + done.stderr
    done = run("check-config", "-c", _config(tmp_path, "a" * 16), env=ENV)
    assert "admin_key" not in done.stdout + done.stderr
    port = reserve_port()
    with running(cli("-c", _config(tmp_path, short), "-l", f"127.0.0.1:{port}"), port=port,
                 env=ENV) as gateway:
        opened = httpx.get(f"http://127.0.0.1:{port}/admin/keys",
                           headers={"Authorization": f"Bearer {short}"})
        assert opened.status_code == 200  # taken: a gateway that ran with it still starts
        output = gateway.output()
    assert "config: admin_key is shorter than 16 characters" in output
    assert short not in output


def test_blanks_around_the_admin_key_are_not_part_of_it(
        tmp_path: Path, emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    """A presented key is read trimmed (HTTP drops the blanks around a header's value), so
    `admin_key: " k "` opened nothing, while the environment's was trimmed."""
    settings = gateway_settings(emulator.url, database=f"sqlite://{tmp_path}/gw.db",
                                admin_key="  padded-admin-key-0123456789 \t")
    server = start_gateway(settings)
    answer = httpx.get(server.url + "/admin/keys",
                       headers={"Authorization": "Bearer padded-admin-key-0123456789"})
    assert answer.status_code == 200, answer.text  # main: 401

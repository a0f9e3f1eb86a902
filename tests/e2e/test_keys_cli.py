"""`azure-openai-proxy keys|teams` as users run them, against the database of a gateway
that is running (a real `serve` process) or not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.processes import cli, running
from tests.waiting import until

HELLO = [{"role": "user", "content": "hello"}]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, env=env,
                          cwd=cwd)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def chat_status(port: int, secret: str, model: str = "gpt-4o") -> int:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": model, "messages": HELLO}, timeout=30).status_code


def config_file(tmp_path: Path, emulator: Emulator, database: Path) -> Path:
    config = {
        "deployment_config": [
            {"model_name": "gpt-4o", "deployment_name": "gpt-4o", "endpoint": emulator.url,
             "api_key": AZURE_KEY},
            {"model_name": "o3-mini", "deployment_name": "o3-mini", "endpoint": emulator.url,
             "api_key": AZURE_KEY},
        ],
        "database": f"sqlite:///{database}",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_keys_made_and_revoked_by_the_cli_reach_a_running_gateway(
        tmp_path: Path, emulator: Emulator, reserve_port: Callable[[], int]) -> None:
    database = tmp_path / "db" / "gateway.db"
    config = str(config_file(tmp_path, emulator, database))
    port = reserve_port()
    # Server-side Azure keys and no client keys: not an open relay, the keys are virtual.
    with running(cli("-c", config, "-l", f"127.0.0.1:{port}"), port=port) as gateway:
        run("teams", "create", "--name", "research", "--rpm", "100", "-c", config)
        created = json.loads(run("keys", "create", "--name", "ann", "--team", "research",
                                 "--models", "gpt-4o", "--tpm", "20000", "-c", config,
                                 "--json").stdout)
        secret = created["key"]
        until(lambda: chat_status(port, secret) == 200, timeout=10,
              message="the running gateway never saw the key the CLI made")
        assert chat_status(port, secret, "o3-mini") == 404
        assert chat_status(port, "not-a-virtual-key") == 401  # no passthrough of Azure's keys
        run("keys", "revoke", "ann", "-c", config)
        revoked = time.monotonic()
        until(lambda: chat_status(port, secret) == 401, timeout=5)
        # The task's bound: a revoke takes effect within one second.
        assert time.monotonic() - revoked < 1.0
        output = gateway.output()
    assert secret not in output and created["prefix"] not in output


def test_tables_json_and_where_the_database_is(tmp_path: Path, emulator: Emulator) -> None:
    database = tmp_path / "gateway.db"
    url = f"sqlite:///{database}"
    run("teams", "create", "--name", "ops", "--tpm", "5000", "--database", url)
    made = run("keys", "create", "--name", "bot", "--team", "ops", "--rpm", "5",
               "--expires", "30d", "--database", url)
    secret = made.stdout.split("key: ", 1)[1].split()[0]
    assert secret.startswith("sk-aop-") and "shown once" in made.stdout
    table = run("keys", "list", "--database", url).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["ID", "NAME", "PREFIX", "TEAM"]
    assert " bot " in row and " ops " in row and secret not in table and "active" in row
    # The same database through the environment and through a config file.
    env = {"AZURE_OPENAI_PROXY_DATABASE": url, "PATH": "/usr/bin:/bin"}
    listed: list[dict[str, Any]] = json.loads(run("keys", "list", "--json", env=env).stdout)
    assert [k["name"] for k in listed] == ["bot"] and "key" not in listed[0]
    assert secret not in json.dumps(listed)
    config = config_file(tmp_path, emulator, database)
    shown = json.loads(run("keys", "show", "bot", "-c", str(config), "--json").stdout)
    assert shown["limits"]["rpm"] == 5 and shown["id"] == listed[0]["id"]
    run("keys", "update", "bot", "--block", "--tpm", "100", "--database", url)
    shown = json.loads(run("keys", "show", "bot", "--database", url, "--json").stdout)
    assert shown["blocked"] and shown["limits"] == {**shown["limits"], "rpm": 5, "tpm": 100}
    rotated = json.loads(run("keys", "rotate", "bot", "--grace", "1h", "--json",
                             "--database", url).stdout)
    assert rotated["key"] != secret and rotated["previous_secret_valid_until"]
    teams = run("teams", "list", "--database", url).stdout
    assert "ops" in teams and "5000" in teams
    assert json.loads(run("teams", "show", "ops", "--json", "--database", url).stdout)[
        "limits"]["tpm"] == 5000


def test_mistakes_get_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    for args, code in (
        (("keys", "create", "--name", "x", "--rpm", "0"), 2),
        (("keys", "create", "--name", "x", "--expires", "soon"), 2),
        (("keys", "create", "--name", "x", "--team", "nope"), 1),
        (("keys", "show", "nope"), 1),
        (("keys", "rotate", "nope", "--grace", "1h"), 1),
        (("teams", "delete", "nope"), 1),
        (("keys", "create", "--name", "x", "--metadata", "[1]"), 2),
    ):
        done = run(*args, "--database", url, check=False)
        assert done.returncode == code, (args, done.stderr)
        assert done.stderr.strip() and "Traceback" not in done.stderr
    done = run("keys", "list", "--database", "postgres://nowhere", check=False)
    assert done.returncode == 2 and "sqlite" in done.stderr


def test_without_governance_no_database_is_opened_or_made(
        tmp_path: Path, emulator: Emulator, reserve_port: Callable[[], int]) -> None:
    config = {"deployment_config": [{"model_name": "gpt-4o", "deployment_name": "gpt-4o",
                                     "endpoint": emulator.url, "api_key": AZURE_KEY}],
              "client_keys": ["static-key"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    port = reserve_port()
    with running(cli("-c", str(path), "-l", f"127.0.0.1:{port}"), port=port, env=env):
        assert chat_status(port, "static-key") == 200
        assert chat_status(port, "sk-aop-anything") == 401
    assert list(home.rglob("*")) == []  # no database file, no directory


def test_the_readme_walkthrough_runs_as_printed(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- readme-walkthrough -->", 1)[1].split("<!-- /readme-walkthrough -->")[0]
    script = block.split("```sh\n", 1)[1].split("```", 1)[0]
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("key: sk-aop-") == 3  # two creates and a rotation
    assert "revoked" in done.stdout and "alice" in done.stdout
    assert (tmp_path / "gateway.db").is_file()


def test_a_database_that_is_not_sqlite_is_a_one_line_config_error(
        reserve_port: Callable[[], int]) -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com/", "PATH": "/usr/bin:/bin",
           "AZURE_OPENAI_PROXY_DATABASE": "postgres://db.example/gateway"}
    done = run("-l", f"127.0.0.1:{reserve_port()}", env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "azure-openai-proxy: config error: database: only sqlite:// databases are supported "
        "(e.g. sqlite:///var/lib/azure-openai-proxy/gateway.db)"]

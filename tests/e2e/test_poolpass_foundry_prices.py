"""Foundry (model inference API) models and their prices: a model the shipped table prices
(prices.yaml, Azure's published serverless prices) is recorded at them; one it does not is
named once, with the `prices:` entry that prices it, by the gateway as it starts (and by
check-config), instead of its records silently costing $0. Through the gateway with the
OpenAI SDK on the emulator, and the gateway's own command line."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.governance.prices import PriceTable, token_cost
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk
from tests.e2e.test_cli import run_cli, wait_for_output
from tests.e2e.test_ledger import records
from tests.processes import cli, running
from tests.waiting import until

UNPRICED = "Mistral-Large-2411"  # no price found for it (prices.yaml says so)


@pytest.mark.parametrize("deployment", ["DeepSeek-R1", "Llama-3.3-70B-Instruct", "Phi-4"])
def test_a_shipped_foundry_model_is_recorded_at_its_price(tmp_path: Path,
                                                          deployment: str) -> None:
    with pool_emulator(EmulatedDeployment(deployment, deployment, "chat")) as emulator:
        settings = load_settings({
            "models": {"chat": [{"deployment_name": deployment, "api": "foundry",
                                 "endpoint": emulator.url, "api_key": AZURE_KEY}]},
            "client_keys": [CLIENT_KEY], "database": f"sqlite:///{tmp_path / 'gw.db'}",
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            answer = sdk(gateway).chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}])
            assert answer.usage is not None
            [record] = records(gateway)
    rates = PriceTable.shipped().rates((deployment,))
    assert rates is not None and rates[0] > 0 and rates[2] > 0
    usage = answer.usage
    assert (record.deployment, record.priced) == (deployment, True)
    assert record.cost_usd == pytest.approx(
        token_cost(rates, usage.prompt_tokens, 0, usage.completion_tokens))


def _config(tmp_path: Path, url: str, **extra: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "models": {"mistral": [
            {"deployment_name": UNPRICED, "api": "foundry", "endpoint": url,
             "api_key": AZURE_KEY},
            # the same deployment on a second endpoint: one model, one warning
            {"deployment_name": UNPRICED, "api": "foundry", "endpoint": url + "/",
             "api_key": AZURE_KEY}],
            "deepseek": [{"deployment_name": "DeepSeek-R1", "api": "foundry", "endpoint": url,
                          "api_key": AZURE_KEY}]},
        "client_keys": [CLIENT_KEY], "database": f"sqlite:///{tmp_path / 'gw.db'}", **extra}))
    return str(path)


WARNING = (f"no price for model mistral (deployment {UNPRICED}): its requests are recorded "
           "unpriced ($0, `priced: false`) and keys with a budget are refused it; add it "
           f"under `prices:` in the config, as `{UNPRICED}: {{input: <USD per 1M input "
           "tokens>, output: <USD per 1M output tokens>}`")


def test_an_unpriced_foundry_model_is_named_once_as_the_gateway_starts(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    config = _config(tmp_path, "https://f.services.ai.azure.com")
    with running(cli("-c", config, "-l", f"127.0.0.1:{port}"), port=port) as gateway:
        output = wait_for_output(gateway, WARNING)
    assert output.count(WARNING) == 1
    assert "DeepSeek-R1)" not in output  # priced: not warned of
    assert AZURE_KEY not in output
    checked = run_cli("check-config", "-c", config)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count(f"WARNING: {WARNING}") == 1
    priced = _config(tmp_path, "https://f.services.ai.azure.com",
                     prices={UNPRICED: {"input": 2.0, "output": 6.0}})
    assert "no price" not in run_cli("check-config", "-c", priced).stdout


def _unpriced(model: str, deployment: str) -> str:
    return WARNING.replace("model mistral", f"model {model}").replace(UNPRICED, deployment)


@pytest.mark.parametrize("workers", ["1", "2"])  # two: one of them names it
def test_a_deployment_a_reload_adds_without_a_price_is_named_once(
        tmp_path: Path, reserve_port: Callable[[], int], workers: str) -> None:
    port, url = reserve_port(), "https://f.services.ai.azure.com"
    path = tmp_path / "config.yaml"

    def configure(*unpriced: str) -> None:
        models = {name: [{"deployment_name": name, "api": "foundry", "endpoint": url,
                          "api_key": AZURE_KEY}] for name in ("DeepSeek-R1", *unpriced)}
        path.write_text(yaml.safe_dump({
            "models": models, "client_keys": [CLIENT_KEY],
            "database": f"sqlite:///{tmp_path / 'gw.db'}"}))

    configure()
    with running(cli("-c", str(path), "-l", f"127.0.0.1:{port}", "--workers", workers),
                 port=port) as gateway:
        configure(UNPRICED)
        gateway.signal(signal.SIGHUP)
        first = _unpriced(UNPRICED, UNPRICED)
        until(lambda: first in gateway.output(), 20, "the reload named no unpriced model")
        configure(UNPRICED, "Mistral-small-2503")  # the second reload names this one only
        gateway.signal(signal.SIGHUP)
        second = _unpriced("Mistral-small-2503", "Mistral-small-2503")
        until(lambda: second in gateway.output(), 20, "the second reload named none")
        output = gateway.output()
    assert output.count(first) == 1 and output.count(second) == 1
    assert "DeepSeek-R1)" not in output and AZURE_KEY not in output


def test_a_reload_names_no_unpriced_model_when_nothing_is_recorded(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    # Started without governance (no database): a reload that adds a database does not
    # start a ledger (fixed at start), so its unpriced deployment costs nothing unremarked.
    port, path = reserve_port(), Path(_config(tmp_path, "https://f.services.ai.azure.com"))
    with_database = path.read_text()
    path.write_text(yaml.safe_dump({**yaml.safe_load(with_database), "database": None}))
    with running(cli("-c", str(path), "-l", f"127.0.0.1:{port}"), port=port) as gateway:
        path.write_text(with_database)
        gateway.signal(signal.SIGHUP)
        # (the reload's warnings are logged before this line)
        until(lambda: "configuration reloaded" in gateway.output(), 20, "not reloaded")
        output = gateway.output()
    assert "no price" not in output

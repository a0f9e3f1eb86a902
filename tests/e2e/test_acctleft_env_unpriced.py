"""Env mode (no config file): a client's model name sent to `AZURE_OPENAI_ENDPOINT` is
made a deployment of that name when first seen, so no start-up can name it unpriced as a
configured deployment is named (test_poolpass_foundry_prices.py). Its first record with
tokens and no price names it once, in the same words, with the `prices:` entry that
prices it (was: its records silently cost $0). A priced name is not named; a name Azure
does not serve (404, no tokens) is not either: a client cannot fill the log with them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import chat_deployment, pool_emulator
from tests.e2e.test_poolpass_foundry_prices import _unpriced
from tests.processes import cli, running
from tests.waiting import until

UNPRICED = "my-finetune"


def _chat(port: int, model: str) -> int:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                      ).status_code


def test_an_env_mode_model_without_a_price_is_named_once(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    with pool_emulator(chat_deployment(UNPRICED), chat_deployment("gpt-4o")) as emulator:
        env = {"AZURE_OPENAI_ENDPOINT": emulator.url + "/", "AZURE_OPENAI_API_KEY": AZURE_KEY,
               "AZURE_OPENAI_PROXY_CLIENT_KEYS": CLIENT_KEY,
               "AZURE_OPENAI_PROXY_DATABASE": f"sqlite:///{tmp_path / 'gw.db'}"}
        warning = _unpriced(UNPRICED, UNPRICED)
        with running(cli("-l", f"127.0.0.1:{port}"), port=port, env=env,
                     cwd=tmp_path) as gateway:
            assert "no price" not in gateway.output()  # nothing known at start
            assert [_chat(port, m) for m in (UNPRICED, UNPRICED, "gpt-4o", "not-served")
                    ] == [200, 200, 200, 404]
            until(lambda: warning in gateway.output(), 20, "the unpriced model never named")
            assert _chat(port, UNPRICED) == 200
            until(lambda: gateway.output().count('"route":"chat/completions"') >= 5, 20,
                  "the access lines never came")
            output = gateway.output()
    assert output.count(warning) == 1, output
    assert output.count("no price for model") == 1  # not gpt-4o's, not not-served's
    assert AZURE_KEY not in output and CLIENT_KEY not in output

"""A serving worker freezes what start-up made and collects its young objects less often
(runtime/heap.py; measured in bench/README.md, "Where a frame's CPU goes (wall clock)")."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from azure_openai_proxy.runtime.heap import YOUNG_THRESHOLD
from azure_openai_proxy.runtime.runner import serve_forever
from azure_openai_proxy.settings import DeploymentSettings, Settings


@pytest.fixture
def gc_state() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_a_worker_that_listens_has_frozen_its_start_up_heap(gc_state: None) -> None:
    gc.unfreeze()
    settings = Settings(
        deployments=(DeploymentSettings(model_name="gpt-4o", deployment_name="gpt-4o",
                                        endpoint="http://127.0.0.1:9", api_key=SecretStr("k" * 32)),),
        allow_open=True, log_level="warning", listen="127.0.0.1:0",
    )
    serving = asyncio.create_task(serve_forever(settings, None, reuse_port=False))
    for _ in range(10_000):  # bounded: serve_forever reaches its wait within a few steps
        if gc.get_freeze_count() or serving.done():
            break
        await asyncio.sleep(0)
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    assert not serving.done(), serving.exception()  # it serves, so SIGTERM reaches its handler
    os.kill(os.getpid(), signal.SIGTERM)  # serve_forever's own handler: a clean stop
    await asyncio.wait_for(serving, 30)
    assert frozen > 1_000  # the modules, settings and app made at start
    assert threshold[0] == YOUNG_THRESHOLD

"""A thread made with its run (`threads/runs`, answered or streamed) through a pool across
two Azure resources, for a static key (no owner recorded, so no owner's home to learn
from): the thread lives on the resource that made it (the assistant's), and every later
request naming it goes there (gateway/attempts.py remembers its id with the run's)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_affinity import client, counts, created_where, regions  # noqa: F401

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["answered", "streamed"])
def test_a_thread_made_with_its_run_stays_on_its_resource(
        client: Any, regions: tuple[Emulator, Emulator], streamed: bool) -> None:  # noqa: F811
    for _ in range(4):
        before = counts(regions)
        helper = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
        home = created_where(regions, before)
        thread = {"messages": [{"role": "user", "content": "Hello there"}]}
        if streamed:
            run = list(client.beta.threads.create_and_run(
                assistant_id=helper.id, thread=thread, stream=True))[-1].data
        else:
            run = client.beta.threads.create_and_run(assistant_id=helper.id, thread=thread)
        before = counts(regions)
        for _ in range(6):  # 6 routed at random all land on one resource 1 time in 32
            assert client.beta.threads.retrieve(run.thread_id).id == run.thread_id
            assert client.beta.threads.messages.list(thread_id=run.thread_id).data
        after = counts(regions)
        assert after[1 - home] == before[1 - home]  # the other resource never saw it
        assert after[home] == before[home] + 12

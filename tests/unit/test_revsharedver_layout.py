"""A shared table is mapped only by workers of the build that made it (governance/
sharedlimits.py `LAYOUT`). The table is made per server start by the parent, but a worker
that dies is replaced by a new process (spawned: it imports the package from disk), so
after an upgrade in place the replacement ran the new build on the old parent's table:
session 28 moved the rate-limit row's in-flight total from column 8 to 9 (8 holds the
limits' version), so each build read the other's version or in-flight columns as its own
(a log position read as requests in flight refused every key with `max_parallel`)."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import pytest

from azure_openai_proxy.governance.sharedlimits import SharedLimits
from azure_openai_proxy.runtime.workers import SharedTables


def _made_by_an_older_build(spec: SharedLimits) -> SharedLimits:
    """`spec` as a parent of a build before `LAYOUT` pickles it to a worker: without it."""
    older = copy.copy(spec)
    if "layout" in vars(older):  # (a build before it has none to drop)
        object.__delattr__(older, "layout")
    loaded = pickle.loads(pickle.dumps(older))
    assert isinstance(loaded, SharedLimits)
    return loaded


def test_a_worker_maps_no_table_of_another_builds_layout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = SharedLimits.create(workers=2, slots=8, directory=str(tmp_path))
    try:
        table = SharedTables(pickle.loads(pickle.dumps(spec)), None).open(1)[0]
        assert table is not None
        table.close()
        with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
            opened = SharedTables(_made_by_an_older_build(spec), None).open(1)
        assert opened == (None, None, None)  # counted by the worker alone
        assert "worker 1 cannot map the shared table of rate limits" in caplog.text
        assert "another build" in caplog.text
    finally:
        spec.remove()

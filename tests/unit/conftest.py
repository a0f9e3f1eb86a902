"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.governance.sharedlimits import SharedLimits
from tests.unit.sharedworkers import SharedWorkers


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[SharedLimits]:
    """A rate-limit table two workers share (governance/sharedlimits.py), removed after."""
    made = SharedLimits.create(workers=2, slots=64, directory=str(tmp_path))
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[SharedWorkers]:
    """Workers' limiters sharing tables (`pair`: two on a new one): every mapping closed
    and every file removed after (tests/unit/sharedworkers.py)."""
    with SharedWorkers(tmp_path) as made:
        yield made

"""Settings and fixtures for the whole suite."""

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support import reserved_socket

# Hypothesis's timing checks (a per-example deadline, "data generation too slow") measure
# the machine, not the code: on two shared cores under xdist they fail at random. The
# suite never asserts timings; hypothesis follows the same rule.
settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("suite")


@pytest.fixture
def reserve_port() -> Iterator[Callable[[], int]]:
    """`reserve_port()` -> a port held for this test (see `reserved_socket`): for a
    child process that binds it itself, or an upstream that refuses connections."""
    held = []

    def reserve() -> int:
        sock = reserved_socket()
        held.append(sock)
        return int(sock.getsockname()[1])

    yield reserve
    for sock in held:
        sock.close()

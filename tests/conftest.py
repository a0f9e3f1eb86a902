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

# The slow step: tests marked `slow` (the benchmark scripts' smoke runs, a saturation
# test, the largest Hypothesis runs, the 200,000- and 400,000-key loads) take minutes between them,
# mostly under load of their own; the README's test command leaves them out and
# `.ci/run` runs them in a step of their own (`pytest -n 2 --slow`), so CI still runs
# every test.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true",
                     help="run only the tests marked slow (.ci/run's second step)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: left out of the default run; `pytest --slow` runs them (.ci/run does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = bool(config.getoption("--slow"))
    kept, left = [], []
    for item in items:
        (kept if (item.get_closest_marker("slow") is not None) == slow else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    # A header, not a collection report: under xdist (`-n 2`) only the workers collect, and
    # the controller, which prints, would say nothing.
    if config.getoption("--slow"):
        return "the slow step: only the tests marked slow"
    return "tests marked slow are left out (deselected): `pytest --slow` runs them, as .ci/run does"


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

"""The `slow` marker (tests/conftest.py): the README's `pytest -n 2` leaves the marked tests
out, `pytest -n 2 --slow` runs those and only those, and `.ci/run` runs both steps, so
every test still runs in CI. Real pytest runs of a small test directory with the suite's
own hooks loaded (`-p tests.conftest`). (With `-n 2` the workers collect and deselect
alike: checked by hand, not here, where each worker would start an interpreter.)"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

REPO = Path(__file__).resolve().parents[2]

_TESTS = {
    "test_marks.py": """
import pytest

def test_plain(ran):
    ran("plain")

@pytest.mark.slow
def test_marked(ran):
    ran("marked")

class TestPair:
    @pytest.mark.slow
    def test_marked_method(self, ran):
        ran("marked_method")

    def test_plain_method(self, ran):
        ran("plain_method")
""",
    "test_module_marked.py": """
import pytest

pytestmark = pytest.mark.slow

def test_in_a_marked_module(ran):
    ran("module")
""",
    "conftest.py": """
from pathlib import Path
import pytest

@pytest.fixture
def ran():
    def note(name):
        with open(Path(__file__).parent / "ran.txt", "a") as file:
            file.write(name + "\\n")
    return note
""",
}


def _run(pytester: pytest.Pytester, *options: str) -> tuple[set[str], pytest.RunResult]:
    """Which of the tests ran, and pytest's result (run in process: no interpreter start)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(**{name[:-3]: text for name, text in _TESTS.items()})
    ran = pytester.path / "ran.txt"
    # Without langsmith's plugin, as pyproject's addopts (pytester's own ini has none):
    # importing it was most of each run's time (~8 s of 9 at a load of 11).
    result = pytester.runpytest_inprocess("-p", "no:langsmith_plugin", "-p", "tests.conftest",
                                          *options)
    names = set(ran.read_text().split()) if ran.exists() else set()
    return names, result


def test_the_default_run_leaves_the_slow_tests_out(pytester: pytest.Pytester) -> None:
    names, result = _run(pytester)
    assert names == {"plain", "plain_method"}
    result.assert_outcomes(passed=2, deselected=3)
    result.stdout.fnmatch_lines(["tests marked slow are left out (deselected)*"])


def test_the_slow_step_runs_only_the_slow_tests(pytester: pytest.Pytester) -> None:
    names, result = _run(pytester, "--slow")
    assert names == {"marked", "marked_method", "module"}
    result.assert_outcomes(passed=3, deselected=2)
    result.stdout.fnmatch_lines(["the slow step: only the tests marked slow"])


def test_ci_runs_both_steps_and_stops_at_a_failure() -> None:
    lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    steps = [line for line in lines if line and not line.startswith("#")]
    readme = (REPO / "README.md").read_text()
    default = ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
               ".venv/bin/python -m pytest -n 2")
    assert default in readme  # the README's command, verbatim in CI
    assert steps[0] == "set -euo pipefail"  # a failing step fails CI
    assert default in steps
    assert ".venv/bin/python -m pytest -n 2 --slow" in steps
    assert steps.index(default) < steps.index(".venv/bin/python -m pytest -n 2 --slow")

"""A budget that is not a finite number is refused, by the CLI as by the admin API
(independent review of issue 13): `keys create --budget nan` made a key whose budget
nothing ever reached (SQLite stores a NaN as NULL: no budget at all), `--budget inf` one
as unlimited, with exit 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.governance.keys import parse_limits
from tests.e2e.test_keys_cli import run


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_the_cli_refuses_a_budget_that_is_not_finite(tmp_path: Path, value: str) -> None:
    database = tmp_path / "gateway.db"
    for flag in ("--budget", "--soft-budget"):
        done = run("keys", "create", "--name", "x", f"{flag}={value}",
                   "--database", f"sqlite:///{database}", check=False)
        assert done.returncode == 2, done.stdout
        assert "must be a number" in done.stderr and "Traceback" not in done.stderr
    if database.exists():  # nothing was made
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count(*) FROM keys").fetchone()[0] == 0


def test_a_finite_budget_is_taken() -> None:
    assert parse_limits({"budget_usd": 2, "soft_budget_usd": 0.5}) == {
        "budget_usd": 2.0, "soft_budget_usd": 0.5}
    with pytest.raises(ValueError):
        parse_limits({"budget_usd": float("nan")})

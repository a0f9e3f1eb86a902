"""`bench.inprocess` measures the ledger writer the gateway runs by default (journaldef
made it the journal child; the bench kept `ledger_writer: thread` unless `--journal`):
`--thread` asks for the thread writer. `_gateway_app` without a writer takes the
gateway's default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.settings import Settings
from bench import inprocess


def _writers(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[str | None]:
    seen: list[str | None] = []

    async def measure(*args: Any) -> float:
        seen.append(args[8])
        return 1e-6

    monkeypatch.setattr(inprocess, "measure", measure)
    inprocess.main(["--ledger", "--requests", "1", *argv])
    return seen


def test_the_default_run_takes_the_gateways_writer(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    assert _writers(monkeypatch, []) == [None]  # main: "thread"
    assert _writers(monkeypatch, ["--thread"]) == ["thread"]
    made: list[Any] = []
    monkeypatch.setattr(inprocess, "create_app",
                        lambda settings, *args, **kwargs: made.append(settings))
    inprocess._gateway_app(f"sqlite:///{tmp_path / 'g.db'}")
    assert made[0].ledger_writer == Settings.model_fields["ledger_writer"].default

"""`check-config` with governance on says which ledger writer runs (journaldef made the
journal child the default; `ledger_writer: thread` the worker's own thread), never a
key or secret; without governance, no ledger line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.runtime.runner import describe


def _settings(**extra: Any) -> Any:
    deployments = [{"model_name": "gpt-4o", "deployment_name": "gpt-4o",
                    "endpoint": "https://a.openai.azure.com/", "api_key": "sk-azure-secret"}]
    return load_settings({"deployment_config": deployments, "allow_open": True,
                          "client_keys": ["sk-client-secret"], **extra}, {})


def _ledger_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("usage ledger:")]


def test_the_default_writer_is_named_with_governance_on(tmp_path: Path) -> None:
    text = describe(_settings(database=f"sqlite:///{tmp_path / 'gw.db'}"))
    [line] = _ledger_lines(text)
    assert "writer journal" in line and "child process" in line, line
    assert "secret" not in text


def test_the_thread_writer_is_named(tmp_path: Path) -> None:
    text = describe(_settings(database=f"sqlite:///{tmp_path / 'gw.db'}",
                              ledger_writer="thread"))
    [line] = _ledger_lines(text)
    assert "writer thread" in line and "child" not in line, line


def test_no_ledger_line_without_governance() -> None:
    assert _ledger_lines(describe(_settings())) == []

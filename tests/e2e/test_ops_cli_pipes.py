"""`azure-openai-proxy keys list | head`: the reader leaves before the listing is written.
The command printed a BrokenPipeError traceback (twice: once more when Python flushed
stdout at exit); now it stops quietly, as `git log | head` does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from azure_openai_proxy.store.keys import KeyStore
from tests.processes import cli


@pytest.fixture(scope="module")
def many_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More keys than a pipe holds (64 KiB), so the command writes after `head` left."""
    path = tmp_path_factory.mktemp("pipes") / "gateway.db"
    store = KeyStore.open(path)
    for i in range(1500):
        store.create_key(f"key-{i}", now=1.0e9)
    store.close()
    return path


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_a_listing_whose_reader_left_ends_quietly(many_keys: Path, flags: list[str]) -> None:
    process = subprocess.Popen(
        cli("keys", "list", *flags, "--database", f"sqlite://{many_keys}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100)  # `head -c 100`
    process.stdout.close()
    err = process.stderr.read().decode()
    code = process.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-500:]  # main: both
    assert err == "" and code == 1

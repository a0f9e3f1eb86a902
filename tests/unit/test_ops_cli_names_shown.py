"""A name stored before names were checked (an older version, or the database written
by hand) may hold control characters: `keys list` and `teams list` show each as '?'
(856a451), and so do `keys revoke` and `teams delete`, which printed it raw to the
operator's terminal ("revoked key_... (\\x1b[2J...)" cleared it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.store.keys import KeyStore

CLEAR = "\x1b[2J\x1b[H"


@pytest.mark.parametrize("argv", [["keys", "revoke", "k1"], ["teams", "delete", "t1"]])
def test_a_name_stored_before_the_checks_is_printed_inert(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)  # the store takes any name: the checks are the callers'
    key, _ = store.create_key("mallory" + CLEAR, now=1.0e9)
    team = store.create_team("ops" + CLEAR, now=1.0e9)
    store.close()
    ref = key.id if argv[0] == "keys" else team.id
    assert main([argv[0], argv[1], ref, "--database", f"sqlite://{path}"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # main: the escape sequence, raw
    assert out.startswith(f"{'revoked' if argv[0] == 'keys' else 'deleted'} {ref} (")
    assert "?[2J?[H" in out

from __future__ import annotations

from pathlib import Path

from azure_openai_proxy.runtime.watch import ConfigWatcher


def test_a_change_of_the_file_calls_back_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("listen: 127.0.0.1:1\n")
    calls: list[int] = []
    watcher = ConfigWatcher(str(path), lambda: calls.append(1), interval=60)
    assert not watcher.check()
    path.write_text("listen: 127.0.0.1:22\n")  # a different size, whatever the mtime resolution
    assert watcher.check()
    assert not watcher.check()
    assert calls == [1]


def test_a_file_being_replaced_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    calls: list[int] = []
    watcher = ConfigWatcher(str(path), lambda: calls.append(1))
    path.unlink()
    assert not watcher.check()
    path.write_text("a: 1\n")
    watcher.check()  # back with the same size: at most one reload, never an error
    assert len(calls) <= 1

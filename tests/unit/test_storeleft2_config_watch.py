"""`--watch-config` knew the file by its mtime and size alone: a new configuration of
the same size with the old mtime was not reloaded. Two real ways to get there: `cp -p
new.yaml config.yaml` (cp rewrites the same file, then sets the source's mtime) and a
file made elsewhere with the old one's mtime moved over it (`rsync -t`, `tar x`, then
`mv`), e.g. `rpm: 100` made `rpm: 200`. The signature now holds the file's device,
inode and ctime too (a write or a rename sets the ctime, which no tool can set back)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from azure_openai_proxy.runtime.watch import ConfigWatcher


@pytest.mark.parametrize("how", ["cp -p over it", "moved over it"])
def test_a_same_size_file_with_the_old_mtime_is_a_change(tmp_path: Path, how: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("rpm: 100\n")
    calls: list[int] = []
    watcher = ConfigWatcher(str(path), lambda: calls.append(1), interval=60)
    new = tmp_path / "new.yaml"
    new.write_text("rpm: 200\n")
    was = path.stat()
    os.utime(new, ns=(was.st_atime_ns, was.st_mtime_ns))  # the mtime it had
    if how == "cp -p over it":
        shutil.copy2(new, path)  # the same file rewritten, its mtime set to new's
    else:
        os.replace(new, path)
    now = path.stat()
    assert (now.st_mtime_ns, now.st_size) == (was.st_mtime_ns, was.st_size)
    assert watcher.check()  # main: False (not reloaded)
    assert calls == [1]
    assert not watcher.check()

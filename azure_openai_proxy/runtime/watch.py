"""`--watch-config`: reload when the config file changes, by polling its `signature`.

Polling (every 2 s by default) needs no platform file-notification API and works on the
bind-mounted files and ConfigMaps of containers, where inotify often sees nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import EllipsisType

__all__ = ["ConfigWatcher", "Signature", "signature"]

log = logging.getLogger("azure_openai_proxy")

Signature = tuple[int, int, int, int, int] | None


def signature(path: str) -> Signature:
    """The file's (mtime, size, device, inode, ctime); None while it is missing. Not the
    mtime and size alone: `cp -p` (the same file rewritten, the source's mtime set on
    it) or a file moved over it with the old mtime (`rsync -t`, `tar x`) can give a new
    configuration both; a write or a rename sets the ctime, which no tool sets back,
    and a file moved in has another inode."""
    try:
        stat = os.stat(path)
    except OSError:
        return None  # being replaced (editors write a new file and rename it)
    return stat.st_mtime_ns, stat.st_size, stat.st_dev, stat.st_ino, stat.st_ctime_ns


class ConfigWatcher:
    """Calls `on_change()` once per change of the file at `path`. `seen`: its signature
    when the settings in force were read (taken before reading it: a change after that is
    one), else the file as it is now."""

    def __init__(self, path: str, on_change: Callable[[], None], interval: float = 2.0,
                 seen: Signature | EllipsisType = ...) -> None:
        self._path = path
        self._on_change = on_change
        self._interval = interval
        self._seen = signature(path) if seen is ... else seen

    def check(self) -> bool:
        """Look once; True (after calling `on_change`) when the file changed."""
        current = signature(self._path)
        if current is None or current == self._seen:
            return False
        self._seen = current
        log.info("config file %s changed; reloading", self._path)
        self._on_change()
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

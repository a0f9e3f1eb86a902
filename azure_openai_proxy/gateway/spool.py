"""Request bodies that are kept, not re-encoded: multipart uploads are spooled (in
memory when small, in a temporary file when large) so they can be sent again on a
retry, and their parts read once (gateway/formparts.py) to find the `model` field and
the fields a budget prices by.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

from azure_openai_proxy.errors import BodyTooLarge, MalformedBody
from azure_openai_proxy.gateway.affinity import folded
from azure_openai_proxy.gateway.formparts import FormPart, read_parts

__all__ = ["SpooledBody", "multipart_boundary"]

_MEMORY_LIMIT = 1024 * 1024
_CHUNK = 256 * 1024
# A Content-Type's parameters, one at a time from where the last ended (RFC 9110 §5.6.6:
# `; name=token` or `; name="quoted string"`), so that `boundary` is the parameter of
# that name, as Azure's parser reads it: a search for `boundary=` anywhere took
# `xboundary=fake` or `charset="boundary=fake"` for it, and a body whose form the
# gateway checked was not the one Azure read.
# An unquoted value is read up to a space or `;` (RFC 2046's boundary characters include
# `:`, `/`, `=` and more that a token cannot hold, and some clients leave them unquoted).
_PARAMETER = re.compile(r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*'
                        r'(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"|([^\s;"]+))')
_TRAILING = re.compile(r"\s*;?\s*")
_LONGEST_BOUNDARY = 200  # RFC 2046 says 70; clients are lenient, so is this


def multipart_boundary(content_type: str) -> bytes:
    """The `boundary` parameter of a multipart/form-data Content-Type; a 400 for
    another media type, parameters that do not parse, or no boundary, an empty or
    over-long one, or two (which would Azure take?)."""
    media = content_type.partition(";")[0]
    if media.strip().lower() != "multipart/form-data":
        raise MalformedBody("This endpoint expects a multipart/form-data body.")
    at, end, found = len(media), len(content_type), []
    while at < end:
        match = _PARAMETER.match(content_type, at)
        if match is None:
            if _TRAILING.fullmatch(content_type, at):
                break
            raise MalformedBody("The multipart/form-data Content-Type's parameters do not "
                                "parse.")
        if match.group(1).lower() == "boundary":
            quoted = match.group(2)
            if quoted is not None and "\\" in quoted:
                # Readers differ: RFC 9110 unescapes a quoted pair, ASP.NET only strips the
                # quotes; two readings would be two forms in one body. No client sends one.
                raise MalformedBody("The multipart/form-data boundary must not hold a "
                                    "backslash.")
            found.append(quoted if quoted is not None else match.group(3))
        at = match.end()
    if len(found) != 1 or not 0 < len(found[0]) <= _LONGEST_BOUNDARY:
        raise MalformedBody("The multipart/form-data body has no boundary."
                            if not found else "The multipart/form-data Content-Type needs "
                            "one boundary parameter of 1 to 200 characters.")
    return found[0].encode("latin-1", "replace")


class SpooledBody:
    """A body read once from the client and replayable any number of times."""

    def __init__(self, memory: bytes | None, file: IO[bytes] | None, size: int) -> None:
        self._memory = memory
        self._file = file
        self.size = size
        self._parts: list[FormPart] | None = None

    @classmethod
    async def read(cls, chunks: AsyncIterator[bytes], limit: int) -> SpooledBody:
        """Everything `chunks` yields, up to `limit` bytes (`BodyTooLarge` past it)."""
        parts: list[bytes] = []
        size = 0
        file: IO[bytes] | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
                if file is None and size > _MEMORY_LIMIT:
                    file = tempfile.TemporaryFile()  # noqa: SIM115  (owned by the SpooledBody)
                    file.write(b"".join(parts))
                    parts = []
                if file is not None:
                    file.write(chunk)
                else:
                    parts.append(chunk)
        except BaseException:
            # Too large, the client left, the read timed out: the temporary file goes now,
            # not whenever the garbage collector gets to it.
            if file is not None:
                file.close()
            raise
        if file is not None:
            file.flush()
            return cls(None, file, size)
        return cls(b"".join(parts), None, size)

    def _view(self) -> bytes | mmap.mmap:
        """The whole body: its bytes, or its file mapped; OSError once it is closed (the
        request ended: its callers read it to estimate, and take OSError for gone)."""
        if self._memory is not None:
            return self._memory
        file = self._file
        if file is not None:
            with contextlib.suppress(ValueError):  # closed by another thread since
                return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        raise OSError(errno.EBADF, "The request body's spool is closed (its request ended): "
                      "its form can no longer be read.")

    def parts(self, boundary: bytes) -> list[FormPart]:
        """The form's parts (gateway/formparts.py), read once: `MalformedBody` for a form
        the upstream could read otherwise. A spooled file is mapped, not read."""
        if self._parts is not None:
            return self._parts
        if self.size == 0:
            raise MalformedBody("The multipart/form-data body is empty.")
        view = self._view()
        try:
            self._parts = read_parts(view, boundary)
        finally:
            if isinstance(view, mmap.mmap):
                view.close()
        return self._parts

    def text(self, part: FormPart) -> str:
        """A (small) text part's value."""
        return b"".join(self._ranges(part.start, part.end)).decode("utf-8", "replace").strip()

    def form_field(self, name: str, boundary: bytes, most: int = 1024
                   ) -> tuple[str, int, int] | None:
        """The value of the first text part named `name` exactly (its first `most` bytes:
        a name, not a document; the caller refuses a longer one by its range) and its
        byte range, or None if there is none."""
        for part in self.parts(boundary):
            if part.name == name and not part.is_file:
                end = min(part.end, part.start + most)
                text = b"".join(self._ranges(part.start, end)).decode("utf-8", "replace")
                return text.strip(), part.start, part.end
        return None

    def field_names(self, boundary: bytes) -> list[str]:
        """Each text part's name, in order: what may name a field in other letters
        (gateway/chatfiles.py `check_form_names`, `RequestBody.held_fields`)."""
        return [part.name for part in self.parts(boundary) if not part.is_file]

    def file_parts(self, boundary: bytes, names: frozenset[str],
                   most: int) -> list[tuple[int, int]]:
        """Where the value of each file part (a non-empty filename) named one of `names`
        (folded, as a case-insensitive reader binds them: `File` is `file`) starts and
        ends, the first `most` of them in order: what a budget reads the first bytes of
        (`read_at`). From the one reading of the form (`parts`); nothing is copied."""
        found: list[tuple[int, int]] = []
        for part in self.parts(boundary):
            if part.is_file and folded(part.name) in names:
                found.append((part.start, part.end))
                if len(found) >= most:
                    break
        return found

    def read_at(self, start: int, end: int) -> bytes:
        """The body's bytes from `start` to `end` (at most what it holds): one pread of a
        spooled file, a slice of one in memory. For a few KB: the caller bounds it. OSError
        once it is closed (as `_view`): no bytes is not what the body held."""
        end = min(end, self.size)
        if start >= end:
            return b""
        if self._memory is not None:
            return self._memory[start:end]
        file = self._file
        if file is not None:
            with contextlib.suppress(ValueError):  # closed by another thread since
                return os.pread(file.fileno(), end - start, start)
        raise OSError(errno.EBADF, "The request body's spool is closed (its request ended): "
                      "its form can no longer be read.")

    def replaying(self, replace: tuple[int, int, bytes] | None = None) -> Callable[[], AsyncIterator[bytes]]:
        """A body factory for the transport; `replace` swaps a byte range (a form field's
        value) on the way out, without copying the rest."""

        async def chunks() -> AsyncIterator[bytes]:
            start, end, value = replace if replace is not None else (self.size, self.size, b"")
            for piece in self._ranges(0, start):
                yield piece
            if value:
                yield value
            for piece in self._ranges(end, self.size):
                yield piece

        return chunks

    def pieces(self) -> Iterator[bytes]:
        """The body, in pieces, read synchronously (from a worker thread: it may read a
        file; after `close` it ends early or raises OSError)."""
        return self._ranges(0, self.size)

    def _ranges(self, start: int, end: int) -> Iterator[bytes]:
        if start >= end:
            return
        if self._memory is not None:
            yield self._memory[start:end]
            return
        # pread, not seek+read: a replay never disturbs another reader's position. The
        # file is looked up for every piece: an upstream client may still be sending the
        # body after the request ended and closed it (an early answer), and a descriptor
        # kept from before could by then belong to another file.
        while start < end:
            file = self._file
            if file is None:
                return
            piece = os.pread(file.fileno(), min(_CHUNK, end - start), start)
            if not piece:
                return
            start += len(piece)
            yield piece

    def length(self, replace: tuple[int, int, bytes] | None = None) -> int:
        """The body's size once `replace` is applied."""
        if replace is None:
            return self.size
        start, end, value = replace
        return self.size - (end - start) + len(value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

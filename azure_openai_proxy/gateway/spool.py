"""Request bodies that are kept, not re-encoded: multipart uploads are spooled (in
memory when small, in a temporary file when large) so they can be sent again on a
retry, and the `model` form field is found without parsing the whole form.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO
from urllib.parse import unquote

from azure_openai_proxy.errors import BodyTooLarge, MalformedBody

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
_FIELD_NAME = re.compile(rb'content-disposition:[^\r\n]*\bname="([^"]*)"', re.IGNORECASE)
# A part's name as a lenient reader takes it (ASP.NET's): quoted or not, or `name*=`.
_DISPOSITION = re.compile(rb"content-disposition:([^\r\n]*)", re.IGNORECASE)
_ANY_NAME = re.compile(rb';\s*name\*?\s*=\s*("[^"]*"|[^;\r\n]*)', re.IGNORECASE)


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
        if self._memory is not None:
            return self._memory
        assert self._file is not None
        return mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def form_field(self, name: str, boundary: bytes) -> tuple[str, int, int] | None:
        """The value of a small text field and its byte range, or None if absent."""
        if self.size == 0:
            return None
        view = self._view()
        try:
            for headers, start, end in _parts(view, boundary):
                if end == -1:
                    return None
                match = _FIELD_NAME.search(headers)
                if match and match.group(1).decode("latin-1") == name and b"filename=" not in headers:
                    return bytes(view[start:end]).decode("utf-8", "replace").strip(), start, end
            return None
        finally:
            if isinstance(view, mmap.mmap):
                view.close()

    def field_names(self, boundary: bytes) -> list[tuple[str, str | None]]:
        """Each text part's name (a part without a filename) as a lenient reader takes
        it (ASP.NET's: quoted or a token, `name*=` decoded), beside the one `form_field`
        reads (None: it reads none there), in order: what may name a field the gateway
        does not see (gateway/chatfiles.py `check_form_names`)."""
        names: list[tuple[str, str | None]] = []
        if self.size == 0:
            return names
        view = self._view()
        try:
            for headers, _start, _end in _parts(view, boundary):
                disposition = _DISPOSITION.search(headers)
                if disposition is not None and b"filename" not in disposition[1].lower():
                    lenient = _ANY_NAME.search(disposition[1])
                    strict = _FIELD_NAME.search(headers)
                    if lenient is not None:
                        names.append((_name_of(lenient[1]), None if strict is None
                                      else strict[1].decode("latin-1")))
            return names
        finally:
            if isinstance(view, mmap.mmap):
                view.close()

    def file_parts(self, boundary: bytes, names: frozenset[str],
                   most: int) -> list[tuple[int, int]]:
        """Where the value of each file part (one with a filename) named one of `names`
        (folded, as a lenient reader binds them: `File` is `file`) starts and ends, the
        first `most` of them in order: what a budget reads the first bytes of (`read_at`).
        The parts are found as `form_field` finds them; nothing is copied."""
        found: list[tuple[int, int]] = []
        if self.size == 0:
            return found
        view = self._view()
        try:
            for headers, start, end in _parts(view, boundary):
                disposition = _DISPOSITION.search(headers)
                if disposition is None or b"filename" not in disposition[1].lower():
                    continue
                name = _ANY_NAME.search(disposition[1])
                if name is not None and _name_of(name[1]).lower() in names:
                    found.append((start, self.size if end == -1 else end))
                    if len(found) >= most:
                        break
            return found
        finally:
            if isinstance(view, mmap.mmap):
                view.close()

    def read_at(self, start: int, end: int) -> bytes:
        """The body's bytes from `start` to `end` (at most what it holds): one pread of a
        spooled file, a slice of one in memory. For a few KB: the caller bounds it."""
        end = min(end, self.size)
        if start >= end:
            return b""
        if self._memory is not None:
            return self._memory[start:end]
        file = self._file
        if file is None:
            return b""
        return os.pread(file.fileno(), end - start, start)

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


def _name_of(value: bytes) -> str:
    """A `name` parameter's value: unquoted, and an RFC 8187 `charset''...` decoded."""
    text = value.strip().strip(b'"').decode("latin-1")
    if "''" in text:
        text = unquote(text.split("''", 1)[1])
    return text


def _parts(view: bytes | mmap.mmap, boundary: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each part of a multipart body: its header bytes, where its value starts and where
    it ends (-1: no closing delimiter follows, and it is the last one given)."""
    delimiter = b"--" + boundary
    position = view.find(delimiter)
    while position != -1:
        header_start = position + len(delimiter) + 2
        header_end = view.find(b"\r\n\r\n", header_start, header_start + 4096)
        if header_end == -1:
            return
        next_part = view.find(b"\r\n" + delimiter, header_end)
        yield bytes(view[header_start:header_end]), header_end + 4, next_part
        if next_part == -1:
            return
        position = view.find(delimiter, next_part + 2)

"""A small multipart/form-data parser for the audio, image-edit and file uploads. Pure.

The app has already read the whole body (it must, to log it and to enforce the size
limit), so parsing bytes is simpler than re-streaming them through aiohttp's reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


class MultipartError(ValueError):
    """The body is not the multipart/form-data its Content-Type says it is."""


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def parse_form(body: bytes, content_type: str) -> dict[str, list[Part]]:
    """Parts by field name (a field may repeat, e.g. `timestamp_granularities[]`)."""
    boundary = _boundary(content_type or "")
    if boundary is None:
        raise MultipartError("Content-Type must be multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MultipartError("multipart body has no closing boundary")
    form: dict[str, list[Part]] = {}
    for chunk in chunks[1:-1]:
        part = _part(chunk)
        form.setdefault(part.name, []).append(part)
    return form


def _boundary(content_type: str) -> str | None:
    """The `boundary` parameter, read by its name as a MIME parser reads it (not the
    first `boundary=` anywhere: `xboundary=` and a quoted `"boundary=..."` are other
    parameters); None for another media type, or no boundary, or two."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        return None
    found = [value for name, value in message.get_params(failobj=[])[1:]
             if name.lower() == "boundary"]
    if len(found) != 1 or not isinstance(found[0], str) or not found[0] or (
            "\\" in content_type):
        return None
    return found[0]


def _part(chunk: bytes) -> Part:
    if not chunk.startswith(b"\r\n"):
        raise MultipartError("malformed multipart boundary line")
    head, sep, data = chunk[2:].partition(b"\r\n\r\n")
    if not sep:
        raise MultipartError("multipart part has no header block")
    if not data.endswith(b"\r\n"):
        raise MultipartError("multipart part is not terminated by CRLF")
    headers = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3).strip()
        for m in _PARAM.finditer(disposition)
    }
    if not disposition.lower().startswith("form-data") or "name" not in params:
        raise MultipartError("multipart part lacks Content-Disposition: form-data; name=...")
    return Part(
        name=params["name"],
        data=data[:-2],
        filename=params.get("filename"),
        content_type=headers.get("content-type"),
    )


def field(form: dict[str, list[Part]], name: str) -> str | None:
    """The text of the first `name` field, or None."""
    parts = form.get(name)
    return parts[0].text if parts else None

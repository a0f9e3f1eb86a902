"""The parts of a multipart/form-data body, read once and strictly, the way the upstream
reads them (ASP.NET's MultipartReader and form binding, Azure's; the bundled emulator's
`parse_form` models it). Pure: bytes (or a memory map of a spooled file) in, parts out.

One reading serves every question the gateway asks of a form (the `model` it names and
replaces, the fields a budget prices by, the names a check refuses), so no two readers
can disagree about which part is which: they did (a search for `name="` anywhere in a
part's head, another for `filename=` anywhere in it), and a form then priced one `n`
while Azure made another. What the upstream could read otherwise than this reader is a
400 here, not a guess: a head line that is not `Name: value`, a folded line, two
Content-Disposition lines or parameters, a `\\"` in one (RFC 9110 unescapes it, ASP.NET
does not), a delimiter followed by anything but padding and CRLF, a part with no closing
delimiter, part heads past ASP.NET's 16 KiB, more parts than its 1,024 form values, a
`name*` alone or unlike `name`, a MIME-encoded name.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from urllib.parse import unquote

from azure_openai_proxy.errors import MalformedBody

__all__ = ["FormPart", "read_parts"]

MAX_PARTS = 1024  # ASP.NET's FormOptions.ValueCountLimit
MAX_HEAD = 16 * 1024  # ASP.NET's MultipartReader.HeadersLengthLimit
_PADDING = 64  # spaces or tabs after a delimiter, at most (RFC 2046's transport padding)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# A disposition parameter from where the last ended: `; name=token-ish` or
# `; name="quoted"` (no escapes: a `\"` is refused before, so a backslash is literal, as
# ASP.NET reads it).
_PARAMETER = re.compile(rb'[ \t]*;[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*'
                        rb'(?:"([^"\r\n]*)"|([^;"\r\n]*))')
_TRAILING = re.compile(rb"[ \t]*;?[ \t]*\Z")
_ENCODINGS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}  # RFC 8187's two


@dataclass(frozen=True, slots=True)
class FormPart:
    """A part: the name it is bound by (`name`, quoted or a token), whether
    it is a file (a non-empty `filename` or `filename*`, as ASP.NET tells them), and
    where its value is in the body."""

    name: str
    is_file: bool
    start: int
    end: int


def read_parts(view: bytes | mmap.mmap, boundary: bytes) -> list[FormPart]:
    """Every part of the form in `view`, in order; `MalformedBody` (400) for a body the
    upstream could read otherwise (above)."""
    delimiter = b"--" + boundary
    if view[:len(delimiter)] == delimiter:
        at = 0
    else:  # a preamble (RFC 2046 allows one): the first delimiter starts a line
        at = view.find(b"\r\n" + delimiter)
        if at == -1:
            raise MalformedBody("The multipart/form-data body has no part with its boundary.")
        at += 2
    parts: list[FormPart] = []
    while True:
        after = at + len(delimiter)
        if view[after:after + 2] == b"--":
            return parts  # the close delimiter: what follows is the epilogue
        head_start = _line_end(view, after)
        if len(parts) == MAX_PARTS:
            raise MalformedBody(f"The multipart/form-data body has more than {MAX_PARTS} "
                                "parts.")
        if view[head_start:head_start + 2] == b"\r\n":
            head_end = head_start  # no head lines at all (refused below: no disposition)
        else:
            head_end = view.find(b"\r\n\r\n", head_start, head_start + MAX_HEAD + 4)
            if head_end == -1:
                raise MalformedBody("A part of the multipart/form-data body has no end to "
                                    f"its headers within {MAX_HEAD} bytes.")
        start = head_end + (2 if head_end == head_start else 4)
        end = view.find(b"\r\n" + delimiter, start)
        if end == -1:
            raise MalformedBody("The multipart/form-data body ends without its closing "
                                "boundary.")
        name, is_file = _disposition(bytes(view[head_start:head_end]))
        parts.append(FormPart(name, is_file, start, end))
        at = end + 2


def _line_end(view: bytes | mmap.mmap, at: int) -> int:
    """Where the line after a delimiter ends: padding, then CRLF (anything else: 400)."""
    line = bytes(view[at:at + _PADDING + 2])
    stripped = line.lstrip(b" \t")
    if not stripped.startswith(b"\r\n"):
        raise MalformedBody("A multipart/form-data boundary line holds more than the "
                            "boundary.")
    return at + len(line) - len(stripped) + 2


def _disposition(head: bytes) -> tuple[str, bool]:
    """The name and file-ness of a part from its head lines."""
    disposition = None
    for line in head.split(b"\r\n") if head else ():
        field, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(field):  # a folded line starts with a space
            raise MalformedBody("A part of the multipart/form-data body has a header "
                                "line that does not parse.")
        if field.lower() == b"content-disposition":
            if disposition is not None:
                raise MalformedBody("A part of the multipart/form-data body has two "
                                    "Content-Disposition headers.")
            disposition = value.strip(b" \t")
    if disposition is None:
        raise MalformedBody("A part of the multipart/form-data body has no "
                            "Content-Disposition header.")
    kind, _, rest = disposition.partition(b";")
    if kind.strip(b" \t").lower() != b"form-data":
        raise MalformedBody("A part's Content-Disposition must be form-data.")
    if b'\\"' in rest:
        raise MalformedBody("A part's Content-Disposition must not hold a backslash before "
                            "a quote (readers differ on it).")
    parameters = _parameters(b";" + rest)
    name, starred = parameters.get("name"), parameters.get("name*")
    if name is None:  # `name*` alone: ASP.NET binds no name from it, Go's reader does
        raise MalformedBody("A part's Content-Disposition has no name=.")
    bound = _text(name)
    if starred is not None and _extended(starred) != bound:
        raise MalformedBody("A part's Content-Disposition gives two names.")
    if "\\" in bound or (bound.startswith("=?") and bound.endswith("?=")):
        # ASP.NET decodes a MIME encoded word (`=?utf-8?B?bW9kZWw=?=` is `model`)
        raise MalformedBody("A form field's name must not hold a backslash or be "
                            "MIME-encoded.")
    return bound, bool(parameters.get("filename") or parameters.get("filename*"))


def _parameters(text: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    at = 0
    while at < len(text):
        match = _PARAMETER.match(text, at)
        if match is None:
            if _TRAILING.match(text, at):
                break
            raise MalformedBody("A part's Content-Disposition parameters do not parse.")
        key = match.group(1).decode("ascii").lower()
        if key in found:
            raise MalformedBody(f"A part's Content-Disposition gives `{key}` twice.")
        quoted: bytes | None = match.group(2)
        found[key] = quoted if quoted is not None else match.group(3).rstrip(b" \t")
        at = match.end()
    return found


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _extended(value: bytes) -> str:
    """An RFC 8187 value (`utf-8''%4Dodel`) decoded; another charset or form: 400."""
    charset, _, rest = _text(value).partition("'")
    _, quote, encoded = rest.partition("'")
    encoding = _ENCODINGS.get(charset.lower())
    if not quote or encoding is None:
        raise MalformedBody("A part's `name*` must be an RFC 8187 value in UTF-8 or "
                            "ISO-8859-1.")
    return unquote(encoded, encoding, "replace")

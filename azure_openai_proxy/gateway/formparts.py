"""The parts of a multipart/form-data body, read once and strictly, the way the upstream
reads them (ASP.NET's MultipartReader and form binding, Azure's; the bundled emulator's
`parse_form` models it). Pure: bytes (or a memory map of a spooled file) in, parts out.

One reading serves every question the gateway asks of a form (the `model` it names and
replaces, the fields a budget prices by, the names a check refuses), so no two readers
can disagree about which part is which: they did (a search for `name="` anywhere in a
part's head, another for `filename=` anywhere in it), and a form then priced one `n`
while Azure made another. What the upstream could read otherwise than this reader is a
400 here, not a guess: a head line that is not `Name: value`, a folded line, two
Content-Disposition lines or parameters, a backslash in a name, a delimiter followed by
anything but padding and CRLF (the closing one too), a preamble holding the boundary, a
part with no closing delimiter, part heads past ASP.NET's 16 KiB, more parts than its
1,024 form values, a `name*` alone or unlike `name`, RFC 2231 pieces, a MIME-encoded
name (or filename without a `filename*`), a `filename*` ASP.NET cannot decode, a
disposition type other than `form-data` exactly, control characters in a head.
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
# A disposition parameter from where the last ended: `; name=token` or `; name="quoted"`
# (a quoted pair `\x` does not end it, for RFC 9110, ASP.NET and Go alike).
_PARAMETER = re.compile(rb'[ \t]*;[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*'
                        rb'(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"|([!#$%&\'*+.^_`|~0-9A-Za-z-]+))[ \t]*'
                        rb'(?=;|\Z)')
_CONTINUED = re.compile(r".*\*[0-9]+\*?\Z")
# Control characters but tab (a bare CR or LF, which Go's reader splits a head at). The
# white space .NET's String.Trim takes off a head value's ends (VT, NBSP, U+2000...) can
# only be where the grammar refuses it: after a token or a quoted value, before the
# disposition type; inside a quoted filename (U+202F in a macOS screenshot's name,
# U+3000 in Japanese ones) ASP.NET keeps it too.
_INVISIBLE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
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
    at = view.find(delimiter)
    if at == -1:
        raise MalformedBody("The multipart/form-data body has no part with its boundary.")
    if at != 0 and view[at - 2:at] != b"\r\n":
        # ASP.NET looks for the first delimiter anywhere in a preamble, RFC 2046 at a
        # line's start: a preamble holding one mid-line would be two forms
        raise MalformedBody("The multipart/form-data body's preamble holds its boundary.")
    parts: list[FormPart] = []
    while True:
        after = at + len(delimiter)
        if view[after:after + 2] == b"--":  # the close delimiter: then the epilogue
            tail = bytes(view[after + 2:after + 4 + _PADDING]).lstrip(b" \t")
            if (tail and not tail.startswith(b"\r\n")) or (
                    not tail and len(view) > after + 4 + _PADDING):  # ASP.NET reads on
                # (ASP.NET reads the whole line, up to 100 bytes, before trimming it)
                raise MalformedBody("The multipart/form-data closing boundary line holds "
                                    "more than the boundary.")
            return parts
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
    if _INVISIBLE.search(head.replace(b"\r\n", b" ").decode("utf-8", "replace")):
        # (VT: ASP.NET trims it off a value's ends, so `name=n<VT>` is `n` there; Go
        # splits a line at a bare LF)
        raise MalformedBody("A part's headers hold a control character.")
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
    if kind.strip(b" \t") != b"form-data":  # ASP.NET compares it exactly
        raise MalformedBody("A part's Content-Disposition must be form-data.")
    parameters = _parameters(b";" + rest)
    name, starred = parameters.get("name"), parameters.get("name*")
    if name is None:  # `name*` alone: ASP.NET binds no name from it, Go's reader does
        raise MalformedBody("A part's Content-Disposition has no name=.")
    bound = _text(name)
    if starred is not None and _extended(starred) != bound:
        raise MalformedBody("A part's Content-Disposition gives two names.")
    if "\\" in bound or _encoded_word(bound):
        # a quoted pair is unescaped by some readers, not others; ASP.NET decodes a MIME
        # encoded word (`=?utf-8?B?bW9kZWw=?=` is `model`)
        raise MalformedBody("A form field's name must not hold a backslash or be "
                            "MIME-encoded.")
    filename, extended = parameters.get("filename"), parameters.get("filename*")
    star = extended is not None and _extended(extended)
    # The .NET SDKs send a non-ASCII name as `filename="=?utf-8?B?...?="` beside its
    # `filename*`, which makes the part a file whatever the word decodes to
    if filename is not None and _encoded_word(_text(filename)) and not star:
        raise MalformedBody("A part's filename must not be MIME-encoded.")
    # A file as ASP.NET and Go tell one: a filename that is not empty once decoded
    # (`filename*=utf-8''` is none: the part is a field)
    return bound, bool(filename) or bool(star)


def _encoded_word(text: str) -> bool:
    return text.startswith("=?") and text.endswith("?=")


def _parameters(text: bytes) -> dict[str, bytes]:
    """A disposition's parameters by name (lower case), values as sent (a quoted one
    without its quotes; its quoted pairs, which ASP.NET keeps and others unescape, only
    where the value's emptiness is all that is read: a name holding one is refused)."""
    found: dict[str, bytes] = {}
    at = 0
    while at < len(text):
        match = _PARAMETER.match(text, at)
        if match is None:
            if _TRAILING.match(text, at):
                break
            raise MalformedBody("A part's Content-Disposition parameters do not parse.")
        key = match.group(1).decode("ascii").lower()
        if key in found or _CONTINUED.match(key):
            # RFC 2231's `name*0=` pieces make `name` for Go's reader, not for ASP.NET
            raise MalformedBody(f"A part's Content-Disposition gives `{key}` twice or "
                                "in pieces.")
        quoted: bytes | None = match.group(2)
        if key.endswith("*") and (quoted is not None or match.group(3).count(b"'") != 2):
            # ASP.NET decodes only `charset'lang'value` unquoted, and reads none otherwise
            raise MalformedBody(f"A part's `{key}` must be an unquoted RFC 8187 value.")
        found[key] = quoted if quoted is not None else match.group(3)
        at = match.end()
    return found


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _extended(value: bytes) -> str:
    """An RFC 8187 value (`utf-8''%4Dodel`) decoded; another charset or form: 400 (ASP.NET
    reads none from it, so a part would be a file to one reader and a field to another)."""
    charset, _, rest = _text(value).partition("'")
    _, quote, encoded = rest.partition("'")
    encoding = _ENCODINGS.get(charset.lower())
    if not quote or encoding is None:
        raise MalformedBody("A part's `name*` or `filename*` must be an RFC 8187 value in "
                            "UTF-8 or ISO-8859-1.")
    return unquote(encoded, encoding, "replace")

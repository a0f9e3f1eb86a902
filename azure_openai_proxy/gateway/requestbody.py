"""The client's request body, read once: JSON (parsed), raw bytes, or a spooled
multipart form; and the model it names.

`read_body` enforces the size limit (413), the content coding, and that a body that is
not a form (an audio or image operation's, a file upload's) is a JSON object (400),
whatever its Content-Type; `RequestBody.model` is the `model` a JSON body or a form names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.balancing import estimated_cost
from azure_openai_proxy.codings import decode_body
from azure_openai_proxy.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType
from azure_openai_proxy.gateway.affinity import folded
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.spool import SpooledBody, multipart_boundary
from azure_openai_proxy.http import interface as http
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.routing import Target

__all__ = ["LargeRequestBody", "RequestBody", "cost_of", "read_body", "repeats_a_key"]

# Below this, re-encoding a checked body (`RequestBody.canonical`) costs less than
# proving its bytes repeat no key: orjson.dumps takes about 1 µs for 10 KB of text and
# 35 µs for 1 MB, the proof 13-25 µs whatever the size for a body of a few long strings
# (an inline image, a document); past it, dumps grows faster than the body (20 MB: 7-18
# ms against the proof's 0.7 ms, on this machine, busy).
_SCANNED_FROM = 1024 * 1024
# The proof's budget: a step (a string, a bracket: about 0.5 µs) per 16 KiB of body, so
# that a body of many small strings, which runs out of steps and is re-encoded anyway,
# costs at most about twice what re-encoding alone would. An inline image or a document
# in a few long strings is proved in a few dozen steps.
_BYTES_PER_STEP_LOG2 = 14
_STRUCTURE = re.compile(rb'["{}\[\]]')  # a string's opening quote, or a bracket
_SPACES = re.compile(rb"[ \t\r\n]*")
_QUOTE, _BACKSLASH, _COLON, _OPEN_OBJECT, _OPEN_ARRAY = 0x22, 0x5C, 0x3A, 0x7B, 0x5B
_ESCAPE_WINDOW = 64  # backslashes before a quote counted at most; more: not proved
# Forms a budget reads (`held_fields`): the pictures an edit asks for, what a
# transcription's answer will carry (its format: only some formats say what it cost).
# An edit's `partial_images` and `input_fidelity` and a transcription's `prompt` add to
# what it costs; its files are read only when a budget holds it (gateway/formmedia.py).
# Each of their text fields is read up to `_MOST_FIELD_BYTES`, never whole: more than
# Azure reads of any (an edit's `prompt`: 32,000 characters at most, 128,000 bytes of
# UTF-8; a transcription's: within its model's 16,000-token context, about 64,000
# characters); the rest of a longer one is not read (the estimates bound what it counts:
# governance/mediatokens.py). A form's field is bounded by the body's limit alone.
_MOST_FIELD_BYTES = 256 * 1024
# A form's `model`: Azure's deployment names are 64 characters at most, a model's name
# a few dozen; past this the field is refused, never read whole.
_MOST_MODEL_BYTES = 1024
_HELD_FORM_FIELDS = {
    "images/edits": ("model", "prompt", "size", "quality", "n", "stream", "partial_images",
                     "input_fidelity"),
    "images/variations": ("model", "size", "n"),
    "audio/transcriptions": ("model", "prompt", "response_format", "stream"),
    "audio/translations": ("model", "prompt", "response_format", "stream"),
}
_PRICING_FIELDS = frozenset({"n", "size", "quality", "response_format", "stream",
                             "partial_images", "input_fidelity"})


@dataclass(slots=True)
class RequestBody:
    """The client's request body, as read once."""

    json: dict[str, Any] | None = None
    raw: bytes | None = None
    spool: SpooledBody | None = None
    boundary: bytes | None = None
    content_type: str | None = None
    # Send the parsed JSON, not the client's bytes: set where the gateway checked what
    # the body names (a virtual key's references), so that Azure reads what was checked
    # even when the client's JSON repeats a key (orjson keeps the last; Azure may not).
    # The price: one orjson.dumps per attempt (about 1 µs for 10 KB), and such a body
    # nested deeper than orjson writes (254 levels) is refused with a 400; an integer
    # past 64 bits, which orjson reads as a float, goes out as one. A large body is
    # spared the dumps when its bytes repeat no key (`LargeRequestBody`).
    canonical: bool = False

    def model(self) -> str | None:
        if self.json is not None:
            value = self.json.get("model")
            if value is None:
                return None
            if not isinstance(value, str):
                raise MalformedBody("`model` must be a string.", param="model")
            return value
        if self.spool is not None and self.boundary is not None:
            field = self.spool.form_field("model", self.boundary)
            if field is not None and field[2] - field[1] > _MOST_MODEL_BYTES:
                # read no further: no model or deployment name is this long
                raise MalformedBody("The form's `model` field is too long to name a model.",
                                    param="model")
            return field[0] if field else None
        return None

    def held_fields(self, operation: str) -> dict[str, Any] | None:
        """What a virtual key's limits and budget read of the body: its JSON, or a form's
        small fields (an image edit's `n`, `size`, `quality`, `prompt`: the pictures it
        asks for; a transcription's `response_format`: whether its answer says what it
        cost), as a `HeldForm` whose files a budget's hold reads when it holds them."""
        names = _HELD_FORM_FIELDS.get(operation)
        if self.json is not None or names is None or self.spool is None or (
                self.boundary is None):
            return self.json
        # What Azure may bind (names case-insensitively, as .NET folds them) must be what
        # is read here: a field that prices the request spelled in other letters, or
        # given twice, is a 400 (`model` is judged by `check_form_names`; the deployment
        # in Azure's path, not the form, decides what runs). The form is read once
        # (gateway/formparts.py), so the part counted is the part read.
        fields: dict[str, Any] = {}
        for part in self.spool.parts(self.boundary):
            if part.is_file:
                continue
            name = folded(part.name)
            if name not in names:
                continue
            if name in _PRICING_FIELDS and (part.name != name or name in fields):
                raise MalformedBody(
                    f"The form's `{name}` field must be given once, named `{name}`.",
                    param=name)
            if part.name == name and name not in fields:
                fields[name] = self.spool.read_at(
                    part.start, min(part.end, part.start + _MOST_FIELD_BYTES)
                ).decode("utf-8", "replace").strip()
        n = fields.get("n")
        if isinstance(n, str):  # else left as a string: held as the most pictures
            fields["n"] = int(n) if n.isascii() and n.isdigit() and len(n) < 6 else n
        if operation == "images/variations":
            return fields  # dall-e-2's: its picture is not billed
        return HeldForm(fields, self.spool, self.boundary)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


class LargeRequestBody(RequestBody):
    """A JSON body of `_SCANNED_FROM` bytes or more: one checked (`canonical` set) is
    re-encoded only when its bytes repeat a key, or when that could not be told within
    the budget (`repeats_a_key`); otherwise the bytes say what was checked, and are sent
    as they came. A class of its own so that the usual body keeps a plain attribute."""

    __slots__ = ("_canonical",)

    @property
    def canonical(self) -> bool:
        return self._canonical

    @canonical.setter
    def canonical(self, checked: bool) -> None:
        raw = self.raw
        self._canonical = checked and not (
            raw is not None and self.json is not None
            and repeats_a_key(raw, len(raw) >> _BYTES_PER_STEP_LOG2) is False)


async def read_body(request: HttpRequest, target: Target, limit: int) -> RequestBody:
    """The body of `request`, at most `limit` bytes, read as `target` expects it."""
    content_type = request.headers.get("Content-Type", "")
    if request.method in ("GET", "DELETE", "HEAD") and not request.has_body:
        return RequestBody()
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    wants_multipart = target.body_kind == "multipart" or (
        target.kind == "resource" and _takes_a_form(target.operation)
        and content_type.lower().startswith("multipart/")
    )
    coding = request.headers.get("Content-Encoding")
    if wants_multipart:
        if coding is not None and coding.strip().lower() != "identity":
            raise UnsupportedMediaType("A multipart body cannot be sent with a Content-Encoding.")
        boundary = multipart_boundary(content_type)
        spool = await SpooledBody.read(request.body_chunks(), limit)
        return RequestBody(spool=spool, boundary=boundary, content_type=content_type)
    try:
        raw = await request.read(limit)
    except http.BodyTooLarge as exc:
        raise BodyTooLarge(str(exc)) from None
    if coding is not None:
        raw = decode_body(raw, coding, limit)
    if target.kind == "resource" and not raw:
        return RequestBody(raw=raw, content_type=content_type or None)
    # Every other body is JSON, whatever Content-Type the client gave it (text/plain, a
    # form's, multipart where no form is taken, none), as on the deployment routes:
    # OpenAI's and Azure's specs give these routes no other body (forms went above), and
    # an upstream that reads a body as JSON whatever its type (the emulator does, even
    # one said to be multipart; Azure documents nothing else) would act
    # on references the gateway never checked (a virtual key's, gateway/ownership.py)
    # had it passed the body on unread. It goes out as `application/json`.
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody(
            "We could not parse the JSON body of your request. The body must be a "
            "JSON object."
        ) from None
    if not isinstance(parsed, dict):
        raise MalformedBody("The JSON body of your request must be an object.")
    if len(raw) >= _SCANNED_FROM:
        return LargeRequestBody(parsed, raw, None, None, "application/json")
    return RequestBody(parsed, raw, None, None, "application/json")  # positional: every request


def _takes_a_form(operation: str) -> bool:
    """A resource route whose body is a multipart form: a file upload (`files`) or an
    upload's part (`uploads/{id}/parts`). Any other takes JSON only, and a body sent to
    one as multipart is read as JSON like any other: passed on unread, it could name
    objects the gateway never checked to an upstream that reads it as JSON anyway (the
    emulator does)."""
    if operation == "files":
        return True
    parts = operation.split("/")
    return len(parts) == 3 and parts[0] == "uploads" and parts[2] == "parts"


def repeats_a_key(raw: bytes, budget: int) -> bool | None:
    """Whether an object in the JSON document `raw` names a key twice (the same key once
    unescaped: `"a"` and `"\\u0061"` are one); None when telling would take more than
    `budget` steps. `raw` must be valid JSON (orjson read it): the walk only finds the
    strings (jumping to each one's end with a memchr, so a long string costs what a
    short one does), the brackets, and which strings are an object's keys (those
    followed by a colon)."""
    keys: list[set[bytes] | None] = []  # per open container: an object's keys, or None
    search, find = _STRUCTURE.search, raw.find
    position = 0
    while budget > 0:
        budget -= 1
        found = search(raw, position)
        if found is None:
            return False
        start = found.end()
        char = raw[start - 1]
        if char != _QUOTE:
            if char == _OPEN_OBJECT:
                keys.append(set())
            elif char == _OPEN_ARRAY:
                keys.append(None)
            else:
                keys.pop()
            position = start
            continue
        end = find(b'"', start)
        while raw[end - 1] == _BACKSLASH:  # the quote may be escaped: `\"`, not `\\"`
            before = raw[max(start, end - _ESCAPE_WINDOW):end]
            run = len(before) - len(before.rstrip(b"\\"))
            if run == len(before) == _ESCAPE_WINDOW:
                return None  # a run of backslashes longer than counted
            if run % 2 == 0:
                break
            budget -= 1
            if budget <= 0:
                return None  # a string of many escaped quotes: each one is a step
            end = find(b'"', end + 1)
        position = end + 1
        owner = keys[-1] if keys else None
        if owner is None:
            continue
        if raw[position] != _COLON:
            spaces = _SPACES.match(raw, position)  # always matches (maybe nothing)
            if raw[spaces.end() if spaces is not None else position] != _COLON:
                continue  # a value
        name = raw[start:end]
        if b"\\" in name:
            name = orjson.loads(raw[start - 1:position]).encode()
        if name in owner:
            return True
        owner.add(name)
    return None


def cost_of(body: RequestBody) -> int:
    """The token cost Azure will estimate for this request, for quota-aware routing."""
    if body.raw is not None:
        return estimated_cost(len(body.raw), body.json)
    return estimated_cost(0, None)  # multipart: audio or images, not prompt text

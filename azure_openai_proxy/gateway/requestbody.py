"""The client's request body, read once: JSON (parsed), raw bytes, or a spooled
multipart form; and the model it names.

`read_body` enforces the size limit (413), the content coding, and that a body that is
not multipart is a JSON object (400), whatever its Content-Type; `RequestBody.model` is
the `model` a JSON body or a form names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.balancing import estimated_cost
from azure_openai_proxy.codings import decode_body
from azure_openai_proxy.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType
from azure_openai_proxy.gateway.spool import SpooledBody, multipart_boundary
from azure_openai_proxy.http import interface as http
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.routing import Target

__all__ = ["RequestBody", "cost_of", "read_body"]


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
    # past 64 bits, which orjson reads as a float, goes out as one.
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
            return field[0] if field else None
        return None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


async def read_body(request: HttpRequest, target: Target, limit: int) -> RequestBody:
    """The body of `request`, at most `limit` bytes, read as `target` expects it."""
    content_type = request.headers.get("Content-Type", "")
    if request.method in ("GET", "DELETE", "HEAD") and not request.has_body:
        return RequestBody()
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    wants_multipart = target.body_kind == "multipart" or (
        target.kind == "resource" and content_type.lower().startswith("multipart/")
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
    # form's, none), as on the deployment routes: OpenAI's and Azure's specs give these
    # routes no other body (multipart went above), and an upstream that reads a body as
    # JSON whatever its type (the emulator does; Azure documents nothing else) would act
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
    return RequestBody(parsed, raw, None, None, "application/json")  # positional: every request


def cost_of(body: RequestBody) -> int:
    """The token cost Azure will estimate for this request, for quota-aware routing."""
    if body.raw is not None:
        return estimated_cost(len(body.raw), body.json)
    return estimated_cost(0, None)  # multipart: audio or images, not prompt text

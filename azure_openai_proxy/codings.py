"""Request bodies sent with a `Content-Encoding`: gzip and deflate are decoded (bounded:
the decoded size counts against the body limit, so a small compressed bomb is refused,
not inflated); any other coding is refused with a 415 naming the ones accepted."""

from __future__ import annotations

import zlib

from azure_openai_proxy.errors import BodyTooLarge, UnsupportedMediaType

__all__ = ["decode_body"]

# zlib's wbits: gzip framing, or zlib framing (what "deflate" means in HTTP).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(raw: bytes, coding: str, limit: int) -> bytes:
    """`raw` decoded from `coding` (a Content-Encoding value), at most `limit` bytes."""
    codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
    for name in reversed(codings):  # the last coding applied is listed last
        if name == "identity":
            continue
        wbits = _WBITS.get(name)
        if wbits is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {name!r} is not supported; send the body uncompressed, "
                "or with gzip or deflate."
            )
        raw = _inflate(raw, wbits, limit)
    return raw


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"The decompressed request body is larger than {limit} bytes.")
        out += inflater.flush()
    except zlib.error:
        raise UnsupportedMediaType("The request body is not valid for its Content-Encoding.") from None
    if not inflater.eof:
        raise UnsupportedMediaType("The compressed request body is truncated.")
    if len(out) > limit:
        raise BodyTooLarge(f"The decompressed request body is larger than {limit} bytes.")
    return out

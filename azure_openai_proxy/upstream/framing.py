"""How an HTTP answer's body is framed and coded, as the upstream clients judge it before
reading it: content-codings inflated (gzip, deflate; `Inflater`, `compressed`, shared
with h2/), a Transfer-Encoding of chunked alone (`coding_refused`), a final status HTTP has
(`status_refused`). Each refusal is an `UpstreamInvalidAnswer` (502)."""

from __future__ import annotations

import zlib

from multidict import MultiMapping, MutableMultiMapping

from azure_openai_proxy.errors import UpstreamInvalidAnswer

__all__ = [
    "INFLATION_MOST", "Inflater", "coding_refused", "compressed", "head_refused",
    "status_refused",
]

# The content-encodings `compressed` inflates (zlib detects gzip's and zlib's headers).
_DECODED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
# A compressed answer inflates at most this many times what came of it, past its first
# MiB (Apache's DeflateInflateRatioLimit, 200 too; Envoy's max_inflate_ratio is 100):
# a chat stream gzip'd inflates 50 to 75 times (a stream of a few words repeated, 155),
# a decompression bomb ~1,000 (200 KiB of gzip'd zeros peaked at ~250 MiB: each read
# was inflated whole, before any limit was looked at).
INFLATION_MOST = 200
_INFLATION_GRACE = 1024 * 1024
_AUTO_HEADER = 32 + zlib.MAX_WBITS  # zlib's "gzip or zlib header, detected"


class Inflater:
    """A gzip or deflate body's decoder (`compressed`): `decompress` each piece as it
    comes, `flush` at the end. Never makes more than `INFLATION_MOST` times the bytes fed
    (after a first MiB): `UpstreamInvalidAnswer` instead, before it makes them."""

    __slots__ = ("_fed", "_made", "_zlib")

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(_AUTO_HEADER)
        self._fed = self._made = 0

    def decompress(self, piece: bytes) -> bytes:
        self._fed += len(piece)
        room = max(_INFLATION_GRACE, INFLATION_MOST * self._fed) - self._made
        data = self._zlib.decompress(piece, room + 1)  # one byte past the room: refused
        self._made += len(data)
        if len(data) > room:
            raise UpstreamInvalidAnswer(
                f"Azure OpenAI's compressed answer inflates more than {INFLATION_MOST} "
                "times its size: refused as a decompression bomb.")
        return data

    def flush(self) -> bytes:
        return self._zlib.flush()


def compressed(headers: MutableMultiMapping[str]) -> bool:
    """Whether an answer's body is to be inflated: gzip or deflate, whose content-encoding
    (and content-length) then go, so callers see identity bytes (we never send
    Accept-Encoding, but a server may compress anyway). `UpstreamInvalidAnswer` for a
    coding we cannot decode (br, zstd, two codings): its header is not relayed, so the
    client would get the compressed bytes as the answer."""
    encoding = headers.get("content-encoding")
    if encoding is None:
        return False
    coding = encoding.strip().lower()
    if coding in _DECODED_ENCODINGS:
        del headers["content-encoding"]
        headers.popall("content-length", None)
        return True
    if coding in ("", "identity"):
        return False
    raise UpstreamInvalidAnswer(
        f"Azure OpenAI answered in a content-encoding the gateway cannot decode "
        f"({encoding[:40]!r}).")


def coding_refused(headers: MultiMapping[str]) -> UpstreamInvalidAnswer | None:
    """The refusal of an HTTP/1.1 answer whose Transfer-Encoding is not chunked alone:
    one field, `chunked` in any case with spaces around it, as llhttp (both clients'
    parser) reads it. llhttp decodes the chunks of `gzip, chunked` and passes the gzip'd
    bytes as the body (relayed as the answer), and reads `chunked, gzip`, `xchunked`,
    `chunked` then a tab, or a second field whose last coding is not chunked, to the
    connection's close (RFC 9112 6.3): aiohttp relayed the chunks' framing as the body,
    fast waited for the close or the read timeout. Two fields are refused whatever they
    say, as Go's net/http refuses them. (aiohttp strips the tab from the value it shows:
    that one it still reads to the close.)"""
    named = headers.getall("transfer-encoding")
    if len(named) == 1 and named[0].strip(" ").lower() == "chunked":
        return None
    shown = ", ".join(named)
    return UpstreamInvalidAnswer(
        f"Azure OpenAI answered in a transfer-coding the gateway cannot decode "
        f"({shown[:40]!r}).")


def status_refused(status: int) -> UpstreamInvalidAnswer:
    """The refusal of a final answer's status outside 200-599 (llhttp and aiohttp take any
    three digits): status 0 was a 500 of the gateway's own HTTP server, 600 or 999 went
    to the client as they were."""
    return UpstreamInvalidAnswer(
        f"Azure OpenAI answered with status {status:03d}, not a final HTTP status.")


def head_refused(status: int, headers: MultiMapping[str]) -> UpstreamInvalidAnswer | None:
    """Both checks, for aiohttp's answers (it takes either as it comes)."""
    if not 200 <= status <= 599:
        return status_refused(status)
    if "transfer-encoding" in headers:
        return coding_refused(headers)
    return None

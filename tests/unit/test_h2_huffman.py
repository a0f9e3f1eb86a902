"""`upstream/h2/huffman.py` (a byte a step) against hpack's `decode_huffman` (a nibble a
step, the reference): the same string for every coded string, the same refusal for every
byte string that codes none (EOS inside, padding of 8 bits or more, padding with a zero),
and hpack's decoder refusing what ours refuses inside a header block."""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2.hpack_decoder import HeaderBlockError, HpackDecoder
from azure_openai_proxy.upstream.h2.huffman import HuffmanError, decode

_ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _reference(raw: bytes) -> bytes | str:
    try:
        return decode_huffman(raw)
    except HPACKDecodingError:
        return "refused"


def _ours(raw: bytes) -> bytes | str:
    try:
        return decode(raw)
    except HuffmanError:
        return "refused"


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_every_string_coded_is_decoded(text: bytes) -> None:
    raw = _ENCODER.encode(text)
    assert decode(raw) == text == decode_huffman(raw)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=24), st.binary(max_size=6))
def test_any_bytes_as_the_reference(text: bytes, tail: bytes) -> None:
    """A coded string cut anywhere and followed by anything, and plain random bytes."""
    raw = _ENCODER.encode(text)
    for candidate in (raw[:len(raw) // 2] + tail, raw + tail, tail, raw[:-1]):
        assert _ours(candidate) == _reference(candidate), candidate.hex()


# (the coded bytes, why they code no string)
_BAD = [
    (b"\xff", "8 bits of padding"),
    (b"\xff\xff\xff\xfc", "EOS: 30 ones"),
    (b"\xff\xff\xff\xff", "EOS then padding"),
    (b"\x1f\xff", "'a' (00011) then 11 ones of padding"),
    (b"\x18", "'a' (00011) then padding 000, not ones"),
    (b"\x1e", "'a' then 110: padding with a zero"),
    (_ENCODER.encode(b"abc") + b"\xff", "a string then a byte of ones"),
]


@pytest.mark.parametrize(("raw", "why"), _BAD)
def test_what_codes_no_string_is_refused(raw: bytes, why: str) -> None:
    assert _reference(raw) == "refused", why
    with pytest.raises(HuffmanError):
        decode(raw)


@pytest.mark.parametrize("text", [b"", b"a", b"0", b"\x00", b"\xff" * 3, bytes(range(256)),
                                  b"5a1b2c3d-0e4f-4a6b-8c9d-0123456789ab", b"1983462"])
def test_edge_strings(text: bytes) -> None:
    raw = _ENCODER.encode(text)
    assert decode(raw) == text


def _bits(text: bytes, then: str) -> bytes:
    """`text` coded, then the bits `then`, padded to a byte with ones."""
    bits = "".join(format(REQUEST_CODES[c], f"0{REQUEST_CODES_LENGTH[c]}b") for c in text)
    bits += then
    bits += "1" * (-len(bits) % 8)
    return int(bits or "0", 2).to_bytes(len(bits) // 8, "big")


@pytest.mark.parametrize("before", range(8))
def test_eos_is_refused_wherever_it_ends(before: int) -> None:
    """EOS (30 ones) after 0-7 symbols: it ends in either half of a byte."""
    raw = _bits(b"a" * before, "1" * 30)
    assert _reference(raw) == "refused"
    with pytest.raises(HuffmanError):
        decode(raw)


@pytest.mark.parametrize("before", range(8))
def test_padding_of_ones_up_to_7_bits_is_accepted(before: int) -> None:
    raw = _bits(b"a" * before, "")
    assert decode(raw) == b"a" * before == decode_huffman(raw)


def test_a_bad_string_in_a_block_is_a_compression_error() -> None:
    block = hpack.Encoder().encode([("x-request-id", "abc")], huffman=True)
    assert HpackDecoder().decode(block, 1 << 16) == [(b"x-request-id", b"abc")]
    # the value's string (its last byte) ends in a byte of ones: padding past 7 bits
    bad = block[:-len(_ENCODER.encode(b"abc")) - 1] + bytes((0x80 | 3,)) + b"\x1c\x64\xff"
    assert _reference(b"\x1c\x64\xff") == "refused"
    with pytest.raises(HeaderBlockError):
        HpackDecoder().decode(bad, 1 << 16)

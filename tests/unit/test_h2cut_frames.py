"""A request's content-length field, made from a constant name part and the digits
(`frames.header_block`), against HPACK's general encoding of that field
(`_indexed_name` and `_string`) and the `hpack` package's decoding, for any length."""

from __future__ import annotations

import hpack
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.transport import UpstreamRequest


@given(st.integers(min_value=0, max_value=1 << 64))
def test_the_content_length_field_is_hpacks_own(length: int) -> None:
    origin = f.parse_origin("https://east.openai.azure.com/openai/deployments/x/chat")
    request = UpstreamRequest("POST", "unused", {"api-key": "k"})
    block = f.header_block(request, origin, length)
    general = f.header_block(request, origin, None) + f._indexed_name(
        f._CONTENT_LENGTH, 0x00, 4) + f._string(str(length).encode())
    assert block == general
    name, value = list(hpack.Decoder().decode(block, raw=True))[-1]
    assert (bytes(name), bytes(value)) == (b"content-length", str(length).encode())

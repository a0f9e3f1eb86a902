"""`upstream/h2/huffman.py`'s tables: not built by importing the gateway (session 29 built
them at import, ~91M instructions and 2.5 MB in every worker), built at the first decode,
and each emitted `bytes` held once however many steps emit it."""

from __future__ import annotations

import gc
import subprocess
import sys

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from azure_openai_proxy.upstream.h2 import huffman

_PROBE = """
import azure_openai_proxy.gateway.app
from azure_openai_proxy.upstream.h2 import huffman
before = huffman._tables.cache_info().currsize
assert huffman.decode(bytes.fromhex(%r)) == b"5a1b2c3d-0e4f"
print(before, huffman._tables.cache_info().currsize)
"""


def test_importing_the_gateway_builds_no_table() -> None:
    raw = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(b"5a1b2c3d-0e4f")
    out = subprocess.run([sys.executable, "-c", _PROBE % raw.hex()], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["0", "1"]  # none after the import, one after the first string


def test_each_emitted_string_is_one_object() -> None:
    _, emitted, _ = huffman._tables()
    strings = [value for value in emitted if value is not None]
    assert len({id(value) for value in strings}) == len(set(strings))
    assert max(map(len, strings)) == 2  # a byte completes at most two symbols


def test_the_emitted_table_leaves_the_collector() -> None:
    """Built after a worker's `gc.freeze`, a tracked table of 65,536 entries would be
    walked at every full collection."""
    _, emitted, _ = huffman._tables()
    gc.collect()
    assert not gc.is_tracked(emitted)

"""`upstream/h2/huffman.py`'s tables: built by importing the gateway, in a worker's start
before it listens, so that no answer pays for them (session 30's first try built them at
the first string decoded: ~149M instructions on a worker's first HTTP/2 answer)."""

from __future__ import annotations

import subprocess
import sys

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

_PROBE = """
import azure_openai_proxy.gateway.app
from azure_openai_proxy.upstream.h2 import huffman

def built_again():
    raise AssertionError("a table built at a decode")

huffman._tables = built_again
print(huffman.decode(bytes.fromhex(%r)).decode())
"""


def test_the_first_decode_builds_no_table() -> None:
    raw = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(b"5a1b2c3d-0e4f")
    done = subprocess.run([sys.executable, "-c", _PROBE % raw.hex()], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.split() == ["5a1b2c3d-0e4f"]

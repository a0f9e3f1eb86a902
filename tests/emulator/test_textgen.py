from __future__ import annotations

import base64
import math
import struct

from azure_openai_proxy.emulator import textgen


def test_generation_is_deterministic_per_prompt_and_seed() -> None:
    a = textgen.generate_tokens("prompt", 1, 20)
    assert a == textgen.generate_tokens("prompt", 1, 20)
    assert a != textgen.generate_tokens("prompt", 2, 20)
    assert a != textgen.generate_tokens("other", 1, 20)
    assert len(a) == 20


def test_tokens_join_into_text_with_one_token_each() -> None:
    tokens = textgen.generate_tokens("x", None, 50)
    text = "".join(tokens)
    assert textgen.count_tokens(text) == 50
    assert text[0].isupper()


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert textgen.count_tokens("Hello, world!") == 4
    assert textgen.count_tokens("") == 0


def test_content_text_and_prompt_tokens() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
    ]
    assert textgen.messages_text(messages) == "Be brief.\nHi"
    assert textgen.chat_prompt_tokens(messages) == 3 + (3 + 3) + (3 + 1)


def test_embeddings_are_unit_vectors_and_stable() -> None:
    v = textgen.embedding_vector("hello", 64)
    assert v == textgen.embedding_vector("hello", 64)
    assert v != textgen.embedding_vector("hellO", 64)
    assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9)
    short = textgen.shortened(v, 8)
    assert len(short) == 8 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-9)


def test_base64_is_little_endian_float32() -> None:
    encoded = textgen.float32_base64([1.0, -0.5])
    assert base64.b64decode(encoded) == struct.pack("<2f", 1.0, -0.5)
    assert base64.b64decode(encoded)[:4] == b"\x00\x00\x80\x3f"

"""What a key with an allow-list may batch (issue 13): a file that starts with a UTF-8
BOM (session 21's suspected gap 2; none found). The official `openai` SDK through the
gateway to the emulator."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import HELLO, Governed, governed_gateway
from tests.support import ServerThread

_BOM = b"\xef\xbb\xbf"


def _lines(*models: str) -> bytes:
    return b"".join(json.dumps({"custom_id": str(n), "method": "POST",
                                "url": "/chat/completions",
                                "body": {"model": model, "messages": HELLO}}).encode() + b"\n"
                    for n, model in enumerate(models))


def _upload(client: openai.OpenAI, content: bytes) -> str:
    return client.files.create(file=("batch.jsonl", io.BytesIO(content), "application/jsonl"),
                               purpose="batch").id


def _batch(client: openai.OpenAI, file_id: str) -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def test_a_batch_file_that_starts_with_a_bom_is_never_a_way_past_the_allow_list(
        governed: Governed) -> None:
    """A UTF-8 BOM before the first line (Windows tools write one) makes that line no
    JSON to the gateway's reader: the file's models are not known, so a batch from it
    is refused to a key with an allow-list (403 `batch_not_allowed`), whatever its lines
    name; never let through with the first line's model unjudged. (No gap: this pins it.)"""
    _, secret = governed.key("mini-only", models=("gpt-4o-mini",))
    client = governed.client(secret)
    for models in (("o3-mini", "gpt-4o-mini"), ("gpt-4o-mini", "o3-mini"), ("gpt-4o-mini",)):
        file_id = _upload(client, _BOM + _lines(*models))
        with pytest.raises(openai.PermissionDeniedError) as refused:
            _batch(client, file_id)
        assert refused.value.code == "batch_not_allowed", models
    # the same lines without the BOM: judged line by line
    with pytest.raises(openai.NotFoundError) as judged:
        _batch(client, _upload(client, _lines("gpt-4o-mini", "o3-mini")))
    assert judged.value.code == "model_not_found"
    assert _batch(client, _upload(client, _lines("gpt-4o-mini"))).status == "validating"


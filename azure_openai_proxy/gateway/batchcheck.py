"""A virtual key's resource POST against its rules: work Azure bills outside any answer
the gateway meters (a batch, a fine-tuning job...: gateway/budgethold.py
`unmetered_work`) is refused to a key with a budget, and a key with an allow-list may
make a batch only from a file whose every line names a model it may use.

The models a file's lines name are read when a virtual key uploads it with purpose
`batch` (`uploaded_batch_models`) and kept with its owner (gateway/ownership.py);
`check_resource_post` judges `POST /batches` by them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import GatewayError, ModelNotAllowed
from azure_openai_proxy.gateway.budgethold import refuse_unmetered
from azure_openai_proxy.gateway.governed import pool_allowed
from azure_openai_proxy.gateway.ownership import BatchNotAllowed, ObjectOwners
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.routing import RoutingTable

__all__ = ["MAX_BATCH_LINES", "batch_file_models", "check_resource_post",
           "uploaded_batch_models"]

# Azure takes at most 100,000 requests in one batch file.
MAX_BATCH_LINES = 100_000


async def check_resource_post(owners: ObjectOwners, table: RoutingTable, caller: Caller,
                              body: Mapping[str, Any] | None, operation: str) -> None:
    """A virtual key's POST to the resource `operation`: unmetered work refused to a key
    with a budget (`refuse_unmetered`: 403 `not_metered`), and a batch from a key with an
    allow-list only from a file whose every line names a model it may use (recorded
    when the file was uploaded through the gateway; a job's `model` is judged as any
    body's)."""
    refuse_unmetered(caller, operation, body)
    key = caller.key
    assert key is not None
    if not key.models or operation != "batches":
        return
    file_id = body.get("input_file_id") if body is not None else None
    owned = await owners.get(file_id) if isinstance(file_id, str) else None
    if owned is None or owned.models is None:
        raise BatchNotAllowed(
            "This key may only make batches from files uploaded through the gateway "
            "with purpose `batch` whose every line names a model.")
    for model in sorted(owned.models):
        try:
            pool = table.resolve(model)
        except GatewayError:
            raise ModelNotAllowed(model) from None
        if not pool_allowed(key.models, model, pool):
            raise ModelNotAllowed(model)


async def uploaded_batch_models(spool: SpooledBody | None,
                                boundary: bytes | None) -> frozenset[str] | None:
    """For an upload with purpose `batch`, the models its lines name. Read in a worker
    thread (a 60 MB file takes a third of a second to parse), so call it only for a key
    with an allow-list, once its limits have admitted the request."""
    if spool is None or boundary is None:
        return None
    try:
        return await asyncio.to_thread(_uploaded_models, spool, boundary)
    except (OSError, ValueError):  # the spool closed under the thread: the client left
        return None


def _uploaded_models(spool: SpooledBody, boundary: bytes) -> frozenset[str] | None:
    form = b"".join(spool.pieces())
    purpose = _form_part(form, boundary, "purpose", file=False)
    if purpose is None or purpose.strip() != b"batch":
        return None
    content = _form_part(form, boundary, "file")
    return None if content is None else batch_file_models(content)


def batch_file_models(content: bytes) -> frozenset[str] | None:
    """The models the lines of a batch file name (`body.model`); None when a line cannot
    be read (then a batch from it cannot be checked), or past Azure's own bounds on a
    batch file (`MAX_BATCH_LINES` requests)."""
    models: set[str] = set()
    lines = 0
    for line in content.splitlines():
        if not line.strip():
            continue
        lines += 1
        if lines > MAX_BATCH_LINES:
            return None
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        body = entry.get("body") if isinstance(entry, dict) else None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            return None
        models.add(model)
    return frozenset(models)


def _form_part(form: bytes, boundary: bytes, field: str, file: bool = True) -> bytes | None:
    """The content of the part named `field` of a multipart form: a file, or (`file`
    False) a plain field. The name is the Content-Disposition `name` parameter read
    exactly (`filename="file"` is not it); None when more than one part has it, as
    which of them Azure takes cannot be known here."""
    delimiter = b"--" + boundary
    found: bytes | None = None
    position = form.find(delimiter)
    while position != -1:
        header_start = position + len(delimiter) + 2
        header_end = form.find(b"\r\n\r\n", header_start, header_start + 4096)
        if header_end == -1:
            return found
        next_part = form.find(b"\r\n" + delimiter, header_end)
        if next_part == -1:
            return found
        params = _disposition(form[header_start:header_end])
        if params.get("name") == field.encode():
            if found is not None or ("filename" in params) != file:
                return None
            found = form[header_end + 4:next_part]
        position = form.find(delimiter, next_part + 2)
    return found


def _disposition(headers: bytes) -> dict[str, bytes]:
    """The parameters of a part's Content-Disposition header, names lowercased; a
    quoted value may hold `;`."""
    params: dict[str, bytes] = {}
    for line in headers.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if not colon or key.strip().lower() != b"content-disposition":
            continue
        pieces: list[bytes] = []
        piece = bytearray()
        quoted = False
        for byte in value:
            if byte == 0x22:
                quoted = not quoted
            elif byte == 0x3B and not quoted:
                pieces.append(bytes(piece))
                piece.clear()
                continue
            piece.append(byte)
        pieces.append(bytes(piece))
        for raw in pieces[1:]:
            name, equals, text = raw.partition(b"=")
            if not equals:
                continue
            text = text.strip()
            if len(text) >= 2 and text[:1] == b'"' and text[-1:] == b'"':
                text = text[1:-1]
            params.setdefault(name.strip().lower().decode("latin-1"), text)
    return params

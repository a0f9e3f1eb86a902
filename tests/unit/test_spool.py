"""Spooled multipart bodies: the model field is found and replaced without re-encoding."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from azure_openai_proxy.errors import BodyTooLarge, MalformedBody
from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody, multipart_boundary

BOUNDARY = b"XyZ123"


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n"
        out += value + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


async def spool(data: bytes, limit: int = 10**9) -> SpooledBody:
    loop = asyncio.get_running_loop()
    reader = StreamReader(BaseProtocol(loop), 2**30, loop=loop)  # never pauses
    for i in range(0, len(data), 7000):
        reader.feed_data(data[i : i + 7000])
    reader.feed_eof()
    return await SpooledBody.read(reader, limit)


async def collect(body: SpooledBody, replace: tuple[int, int, bytes] | None = None) -> bytes:
    return b"".join([chunk async for chunk in body.replaying(replace)()])


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])  # in memory, and on disk
async def test_model_field_found_and_replaced(size: int) -> None:
    audio = bytes(range(256)) * (size // 256) + b'name="model"\r\n\r\nfake'
    data = form(("file", audio, "a.wav"), ("model", b"whisper-1", None), ("language", b"en", None))
    body = await spool(data)
    field = body.form_field("model", BOUNDARY)
    assert field is not None and field[0] == "whisper-1"
    replaced = await collect(body, (field[1], field[2], b"my-whisper"))
    assert replaced == data.replace(b"\r\n\r\nwhisper-1\r\n", b"\r\n\r\nmy-whisper\r\n")
    assert body.length((field[1], field[2], b"my-whisper")) == len(replaced)
    # Replaying twice gives the same bytes (retries).
    assert await collect(body) == data == await collect(body)
    body.close()


async def test_absent_field_and_limits() -> None:
    body = await spool(form(("file", b"x", "a.wav")))
    assert body.form_field("model", BOUNDARY) is None
    with pytest.raises(BodyTooLarge):
        await spool(b"x" * 5000, limit=100)


def test_boundary_parsing() -> None:
    assert multipart_boundary('multipart/form-data; boundary="abc"') == b"abc"
    assert multipart_boundary("multipart/form-data; boundary=abc; charset=x") == b"abc"
    with pytest.raises(MalformedBody):
        multipart_boundary("application/json")
    with pytest.raises(MalformedBody):
        multipart_boundary("multipart/form-data")


async def test_a_replay_stops_once_the_spool_is_closed() -> None:
    """An upstream client may still be sending after the request ended (an early answer):
    it must not read a closed, possibly reused, file descriptor."""
    body = await spool(form(("file", b"x" * (3 * 1024 * 1024), "a.wav")))
    pieces = body.replaying()()
    first = await pieces.__anext__()
    assert first
    body.close()
    rest = [piece async for piece in pieces]
    assert sum(map(len, rest)) < body.size  # stopped early, no error


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])  # in memory, and on disk
async def test_field_names_as_a_lenient_reader_takes_them(size: int) -> None:
    audio = bytes(range(256)) * (size // 256)
    data = form(("file", audio, "a.wav"), ("model", b"whisper-1", None),
                ("Model", b"other", "m.txt"))  # a file part: not a text field
    for disposition in ("form-data; name=Model", "form-data; name=Model; name*=utf-8''%4Dodel",
                        'form-data;  NAME = "language"'):
        data = data.replace(b"--" + BOUNDARY + b"--\r\n", (
            b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode()
            + b"\r\n\r\nx\r\n--" + BOUNDARY + b"--\r\n"))
    body = await spool(data)
    assert body.field_names(BOUNDARY) == ["model", "Model", "Model", "language"]
    body.close()


async def test_a_closed_spool_read_whole_is_an_oserror() -> None:
    """Its callers (an estimate read after the request ended, gateway/formestimate.py;
    a batch upload's models read in a thread, gateway/batchcheck.py) take OSError for
    a spool that is gone: it was an AssertionError, past them."""
    body = await spool(form(("model", b"gpt-image-1", None),
                            ("image", b"x" * (3 * 1024 * 1024), "a.png")))
    body.close()
    with pytest.raises(OSError, match="spool is closed"):
        body.parts(BOUNDARY)
    with pytest.raises(OSError, match="spool is closed"):
        body.form_field("model", BOUNDARY)
    # a range of it too: it was b"" (a picture's header not found, an audio's head empty)
    with pytest.raises(OSError, match="spool is closed"):
        body.read_at(0, 100)
    assert body.read_at(100, 100) == b""  # an empty range is empty, open or not
    read = read_form(RequestBody(spool=body, boundary=BOUNDARY), "images/edits")
    assert read.fields is None and read.size == body.size  # estimated as its size

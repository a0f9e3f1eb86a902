"""Review of session 17 (bad input): `gateway/spool.py` `_BOUNDARY` is an unanchored search, so in
`Content-Type: multipart/form-data; xboundary=fake; boundary=real` the gateway reads the
boundary `fake` (from the `xboundary` parameter, or from `charset="boundary=fake"`), while a
MIME parser that reads parameters by name (ASP.NET Core's MediaTypeHeaderValue, which
Azure runs; Python's email package below; aiohttp's parse_mimetype) reads `real`. The body
and the Content-Type go upstream unchanged, so a key with an allow-list uploads a batch
file whose lines the gateway reads as gpt-4o (the `--fake` parts, placed in the real
form's epilogue) while Azure stores the `--real` parts (gpt-4o-mini lines); a batch from
it then passes `check_resource_post`. On main the first assert fails."""
from __future__ import annotations

import asyncio
import email.parser
import email.policy

from azure_openai_proxy.gateway.batchcheck import uploaded_batch_models
from azure_openai_proxy.gateway.spool import SpooledBody, multipart_boundary

GOOD = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o","messages":[]}}\n'
BAD = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}}\n'


def _section(boundary: bytes, content: bytes) -> bytes:
    return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n")


def _by_a_mime_parser(content_type: str, body: bytes) -> bytes:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    raise AssertionError("no file part")


def test_the_gateway_reads_the_boundary_parameter_azure_reads() -> None:
    for content_type in ("multipart/form-data; xboundary=fake; boundary=real",
                         'multipart/form-data; charset="boundary=fake"; boundary=real'):
        body = _section(b"real", BAD) + _section(b"fake", GOOD)
        assert _by_a_mime_parser(content_type, body).startswith(BAD)  # what Azure stores
        assert multipart_boundary(content_type) == b"real", content_type  # main: b"fake"

        assert asyncio.run(_models(body, content_type)) == frozenset({"gpt-4o-mini"})


async def _models(body: bytes, content_type: str) -> frozenset[str] | None:
    """The models the gateway reads from an upload's batch lines."""
    async def chunks():  # type: ignore[no-untyped-def]
        yield body
    spool = await SpooledBody.read(chunks(), 1 << 20)
    return await uploaded_batch_models(spool, multipart_boundary(content_type))


def test_a_boundary_is_one_parameter_of_that_name_or_a_400() -> None:
    import pytest

    from azure_openai_proxy.errors import MalformedBody

    assert multipart_boundary('multipart/form-data; boundary="a b:c"') == b"a b:c"
    assert multipart_boundary("Multipart/Form-Data ; charset=utf-8; Boundary=x-y ;") == b"x-y"
    # RFC 2046's boundary characters a token cannot hold, unquoted, as some clients send
    assert multipart_boundary("multipart/form-data; boundary=a:b/c=d?e") == b"a:b/c=d?e"
    assert multipart_boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YW"
                              ) == b"----WebKitFormBoundary7MA4YW"
    for content_type in ("multipart/form-data; boundary=a; boundary=b",  # which one?
                         "multipart/form-data", "multipart/form-datax; boundary=a",
                         "multipart/form-data; boundary=", "multipart/form-data; boundary=a b",
                         "multipart/form-data; boundary=" + "x" * 201,
                         'multipart/form-data; boundary="open',
                         # a quoted pair: unescaped by RFC 9110, kept by ASP.NET
                         'multipart/form-data; boundary="a\\"b"'):
        with pytest.raises(MalformedBody):
            multipart_boundary(content_type)

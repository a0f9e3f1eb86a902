"""A multipart form read once, strictly, the way the upstream reads it
(gateway/formparts.py), by every question the gateway asks of it: the session-18 review
of a80948d found two readers of one form that disagreed (five ways to hold 1 picture
while Azure made 10, a streamed transcription past a hard budget) and the .NET SDKs'
unquoted names refused. The emulator's `parse_form` (a model of Azure's reader) says
what the upstream reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.emulator.multipart import field, parse_form
from azure_openai_proxy.gateway.budgethold import reserve_budget
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable

B = b"XyZ123"
CT = "multipart/form-data; boundary=XyZ123"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def part(headers: list[bytes], value: bytes) -> bytes:
    return b"--" + B + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + value + b"\r\n"


def end() -> bytes:
    return b"--" + B + b"--\r\n"


def cd(params: str) -> bytes:
    return b"Content-Disposition: form-data; " + params.encode("utf-8")


async def _spool(data: bytes) -> Any:
    from azure_openai_proxy.gateway.spool import SpooledBody
    loop = asyncio.get_running_loop()
    reader = StreamReader(BaseProtocol(loop), 2**30, loop=loop)
    reader.feed_data(data)
    reader.feed_eof()
    return await SpooledBody.read(reader, 10**9)


async def held(data: bytes, operation: str) -> dict[str, Any] | None:
    body = RequestBody(spool=await _spool(data), boundary=B)
    try:
        return body.held_fields(operation)
    finally:
        body.close()


def _hold_usd(fields: dict[str, Any] | None, operation: str = "images/edits") -> float:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    caller = Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=Limits(
        budget_usd=100.0, budget_period="daily")))
    hold = reserve_budget(guard, caller, fields, ("gpt-image-1",) * 3, operation, 1024)
    assert hold is not None
    return hold.usd


def _edit(n_part: bytes, before: bytes = b"") -> bytes:
    return (part([cd('name="model"')], b"gpt-image-1")
            + part([cd('name="image"; filename="a.png"'), b"Content-Type: image/png"], PNG)
            + before
            + part([cd('name="prompt"')], b"a cat")
            + part([cd('name="quality"')], b"low")
            + part([cd('name="size"')], b"1024x1024")
            + n_part + end())


# --- n=10 pictures made, held as 1 -------------------------------------------------

BYPASSES = {
    # a text part whose *Content-Type* mentions filename=: form_field skips the part
    # (it looks for b"filename=" in all its headers), field_names does not (it looks
    # in the disposition only), so the count check passes and n is read as absent (1)
    "filename-in-content-type": _edit(part(
        [cd('name="n"'), b"Content-Type: text/plain; filename=x"], b"10")),
    # an empty filename: ASP.NET's IsFormDisposition holds for it (FileName and
    # FileNameStar empty), so Azure binds it as the field; both gateway readers skip it
    "empty-filename": _edit(part([cd('name="n"; filename=""')], b"10")),
    # an extra disposition parameter: the lenient reader takes the first `; name=`
    # ("prompt"), the strict `_FIELD_NAME` the last `\bname="` ("n"): form_field reads
    # this prompt part as `n`, so the real n part (once, name="n") is never read
    "x-name-param": _edit(part([cd('name="n"')], b"10"),
                          before=part([cd('name="prompt2"; x-name="n"')], b"1")),
    # another header mentioning content-disposition first: both regexes read that line
    "decoy-header-line": _edit(part(
        [b'X-Note: content-disposition: form-data; name="note"', cd('name="n"')], b"10")),
    # part headers past 4,096 bytes: `_parts` stops there; every later part is unseen
    # (ASP.NET's MultipartReader allows 16 KiB of part headers)
    "long-headers": _edit(part([cd('name="n"'), b"X-Pad: " + b"a" * 5000], b"10")),
}


@pytest.mark.parametrize("name", list(BYPASSES))
async def test_the_gateway_holds_the_pictures_the_upstream_makes(name: str) -> None:
    data = BYPASSES[name]
    upstream_n = field(parse_form(data, CT), "n")
    assert upstream_n == "10"  # what the emulator (Azure's model) reads and makes
    fields = await held(data, "images/edits")
    assert fields is not None
    # before: n was missing (or "1"), so 1 picture was held, not 10
    assert fields["n"] == 10
    plain = await held(_edit(part([cd('name="n"')], b"10")), "images/edits")
    assert _hold_usd(fields) == pytest.approx(_hold_usd(plain))


# --- a transcription's stream / response_format unseen ------------------------------

async def test_a_streamed_transcription_hidden_from_the_check_is_refused() -> None:
    data = (part([cd('name="model"')], b"gpt-4o-transcribe")
            + part([cd('name="file"; filename="a.wav"'), b"Content-Type: audio/wav"], b"RIFF")
            + part([cd('name="stream"'), b"Content-Type: text/plain; filename=x"], b"true")
            + end())
    assert field(parse_form(data, CT), "stream") == "true"
    fields = await held(data, "audio/transcriptions")
    # on main: {'model': 'gpt-4o-transcribe'}: no stream, the hard budget serves it
    assert fields is not None and fields.get("stream") == "true"


@pytest.mark.parametrize("spelled", ["\u017ftream", "re\u017fponse_format"])
async def test_a_name_folded_by_ordinal_ignore_case_is_checked(spelled: str) -> None:
    """U+017F upper-cases to 'S' (.NET OrdinalIgnoreCase, the project's own `folded`);
    held_fields compares `lenient.lower()`, and reads quoted names as latin-1."""
    data = (part([cd('name="model"')], b"gpt-4o-transcribe")
            + part([cd(f'name="{spelled}"')], b"true")
            + end())
    from azure_openai_proxy.errors import MalformedBody
    with pytest.raises(MalformedBody):  # on main: passes unread
        await held(data, "audio/transcriptions")


# --- a legitimate client refused ----------------------------------------------------

async def test_the_dotnet_sdks_form_is_not_refused() -> None:
    """openai-dotnet / Azure.AI.OpenAI build forms with System.Net.Http's
    MultipartFormDataContent.Add(content, name): ContentDispositionHeaderValue.Name
    quotes a value only when it is not a token, so it sends `name=response_format`."""
    data = (part([b"Content-Type: text/plain; charset=utf-8", cd("name=model")],
                 b"gpt-4o-transcribe")
            + part([cd("name=file; filename=a.wav; filename*=utf-8''a.wav")], b"RIFF")
            + part([b"Content-Type: text/plain; charset=utf-8", cd("name=response_format")],
                   b"json")
            + end())
    assert field(parse_form(data, CT), "response_format") == "json"
    fields = await held(data, "audio/transcriptions")  # on main: MalformedBody (400)
    assert fields is not None and fields.get("response_format") == "json"


# --- what the reader refuses: anything the upstream could read otherwise -------------

REFUSED = {
    "boundary-line-tail": b"--" + B + b"x\r\n" + cd('name="n"') + b"\r\n\r\n1\r\n" + end(),
    "no-closing-delimiter": part([cd('name="n"')], b"1"),
    "folded-header": part([cd('name="n"'), b" ; name=\"m\""], b"1") + end(),
    "two-dispositions": part([cd('name="n"'), cd('name="m"')], b"1") + end(),
    "backslash-in-name": part([cd('name="n\\\\"')], b"1") + end(),
    "name-in-pieces": part([cd("name=\"x\"; name*0=n")], b"1") + end(),
    "form-data-in-capitals": part([b'Content-Disposition: Form-Data; name="n"'], b"1") + end(),
    "vertical-tab": part([cd("name=n\x0b")], b"1") + end(),
    "mime-encoded-filename": part([cd('name="n"; filename="=?utf-8?B??="')], b"1") + end(),
    "undecodable-filename-star": part([cd('name="n"; filename*=x')], b"1") + end(),
    "unquoted-value-with-space": part([cd('name=n x')], b"1") + end(),
    "names-differ": part([cd("name=n; name*=utf-8''m")], b"1") + end(),
    "name-twice": part([cd('name="n"; name="m"')], b"1") + end(),
    "no-name": part([cd('filename="a"')], b"1") + end(),
    "not-form-data": part([b'Content-Disposition: attachment; name="n"'], b"1") + end(),
    "no-disposition": part([b"Content-Type: text/plain"], b"1") + end(),
    "head-line-without-colon": part([cd('name="n"'), b"garbage"], b"1") + end(),
    "head-too-long": part([cd('name="n"'), b"X-Pad: " + b"a" * 17000], b"1") + end(),
    "other-charset": part([cd("name=n; name*=utf-16''n")], b"1") + end(),
    "starred-name-alone": part([cd("name*=utf-8''n")], b"1") + end(),
    "mime-encoded-name": part([cd('name="=?utf-8?B?bg==?="')], b"1") + end(),
    "too-many-parts": part([cd('name="x"')], b"1") * 1025 + end(),
    "no-part": b"hello",
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_form_read_otherwise_by_some_reader_is_a_400(name: str) -> None:
    from azure_openai_proxy.errors import MalformedBody
    with pytest.raises(MalformedBody):
        await held(REFUSED[name], "images/edits")


async def test_what_the_reader_allows() -> None:
    """A preamble, padding after a delimiter, an epilogue, an unquoted name, a `name*`
    beside the same `name`,
    a backslash in a filename (old browsers sent paths), parameters in any letters."""
    data = (b"preamble\r\n--" + B + b" \t\r\n" + cd("name=model") + b"\r\n\r\ngpt-image-1\r\n"
            + part([b"content-disposition: form-data; NAME=\"n\"; name*=UTF-8''%6E"], b"3")
            + part([cd('name="image"; filename="C:\\pics\\a.png"')], PNG)
            + end() + b"epilogue")
    fields = await held(data, "images/edits")
    assert fields == {"model": "gpt-image-1", "n": 3}


def test_arbitrary_bytes_are_read_or_refused_never_raise_otherwise() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from azure_openai_proxy.errors import MalformedBody
    from azure_openai_proxy.gateway.formparts import read_parts

    pieces = st.sampled_from([b"--" + B, b"\r\n", b"--", b'Content-Disposition: form-data; ',
                              b'name="n"', b"name=", b"filename=", b'"', b";", b"\\", b":",
                              b" ", b"x", b"\xff", b"name*=utf-8''%FF"])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(pieces, max_size=40).map(b"".join))
    def check(data: bytes) -> None:
        try:
            parts = read_parts(data, B)
        except MalformedBody:
            return
        for p in parts:
            assert 0 <= p.start <= p.end <= len(data)

    check()


# --- pictures asked as a stream, and JSON's other letters -----------------------------

def _hard_caller() -> Caller:
    return Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=Limits(
        budget_usd=100.0, budget_period="daily")))


@pytest.mark.parametrize("operation", ["images/generations", "images/edits"])
@pytest.mark.parametrize("stream", [True, "true", "1", "on"])
def test_a_streamed_picture_is_held_for_a_hard_budget(operation: str, stream: object) -> None:
    """Its usage, in its completed event, is metered (normalize/picture_meter.py): held
    as the same picture asked without `stream` (session 19; it was refused)."""
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    body = {"model": "gpt-image-1", "prompt": "x", "stream": stream, "partial_images": 2}
    streamed = reserve_budget(guard, _hard_caller(), body, ("gpt-image-1",) * 3, operation,
                              1024)
    plain = reserve_budget(guard, _hard_caller(), {**body, "stream": False},
                           ("gpt-image-1",) * 3, operation, 1024)
    assert streamed is not None and plain is not None
    assert streamed.usd == plain.usd > 0


async def test_a_streamed_edit_form_is_held_for_a_hard_budget() -> None:
    data = _edit(part([cd('name="stream"')], b"true"))
    fields = await held(data, "images/edits")
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    hold = reserve_budget(guard, _hard_caller(), fields, ("gpt-image-1",) * 3,
                          "images/edits", 1024)
    assert hold is not None and hold.usd > 0


async def test_a_streamed_transcription_form_is_refused_to_a_hard_budget() -> None:
    """The review found a80948d's `stream` form field untested."""
    from azure_openai_proxy.gateway.budgethold import ModelNotPriced
    data = (part([cd('name="model"')], b"whisper-1")
            + part([cd('name="file"; filename="a.wav"')], b"RIFF")
            + part([cd('name="response_format"')], b"verbose_json")
            + part([cd('name="stream"')], b"true") + end())
    fields = await held(data, "audio/transcriptions")
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    with pytest.raises(ModelNotPriced, match="stream"):
        reserve_budget(guard, _hard_caller(), fields, ("whisper-1",) * 3,
                       "audio/transcriptions", 1024)


@pytest.mark.parametrize("other", ["N", "Max_Tokens", "STREAM", "Input", "Size", "\u017ftream"])
def test_a_priced_json_name_in_other_letters_is_refused(other: str) -> None:
    from azure_openai_proxy.gateway.affinity import ReferenceKeyCased
    from azure_openai_proxy.gateway.chatfiles import check_top_names
    with pytest.raises(ReferenceKeyCased):
        check_top_names({"model": "m", other: 10}, model=False, chat=False)
    check_top_names({"model": "m", "Custom": 1}, model=False, chat=False)  # not read


def test_the_priced_names_cover_what_the_estimate_reads() -> None:
    from azure_openai_proxy.gateway.chatfiles import PRICED_TOP_NAMES
    from azure_openai_proxy.governance import estimate
    assert {*estimate._MAX_FIELDS, *estimate._PROMPT_FIELDS,
                                *estimate.SCHEMA_FIELDS} <= PRICED_TOP_NAMES

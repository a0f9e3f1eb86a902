"""Session 18's second review of the one form reader (gateway/formparts.py): forms the
gateway read one way and the upstream another. Each case: the emulator's parse_form
(and/or ASP.NET, by its source) reads n=10; the gateway now holds 10 pictures or
refuses the form (400). Legitimate clients' forms that the first version refused are
read."""
from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.emulator.multipart import field, parse_form
from azure_openai_proxy.errors import MalformedBody
from tests.unit.test_s18_form_parts import CT, PNG, B, _spool, end, part
from tests.unit.test_s18_form_parts import held as held_as


def cd(params: bytes) -> bytes:
    return b"Content-Disposition: form-data; " + params


async def held(data: bytes, operation: str = "images/edits") -> dict[str, Any] | None:
    return await held_as(data, operation)


BASE = (part([cd(b'name="model"')], b"gpt-image-1")
        + part([cd(b'name="image"; filename="a.png"'), b"Content-Type: image/png"], PNG)
        + part([cd(b'name="prompt"')], b"a cat"))

EMULATOR_READS_10 = {
    # ASP.NET: MultipartReader header value .Trim() (char.IsWhiteSpace: VT, FF, NBSP...)
    # -> `form-data; name=n`; gateway: unquoted value rstrip(" \t") -> name "n\x0b"
    "unquoted-name-trailing-vt": BASE + part([cd(b"name=n\x0b")], b"10") + end(),
    "unquoted-name-trailing-nbsp": BASE + part([cd("name=n\u00a0".encode())], b"10") + end(),
    # ASP.NET: FileNameStar = GetName("filename*") -> TryDecode5987 fails -> null ->
    # IsFormDisposition: a form field. Gateway: non-empty bytes -> is_file, skipped.
    # the same Trim: `filename=<VT>` is an empty filename to ASP.NET (a form field),
    # a non-empty one (a file, skipped) to the gateway
    "empty-filename-trailing-vt": BASE + part([cd(b'name="n"; filename=\x0b')], b"10") + end(),
    "filename-star-undecodable": BASE + part([cd(b'name="n"; filename*=x')], b"10") + end(),
    "filename-star-empty-value": BASE + part([cd(b"name=\"n\"; filename*=utf-8''")], b"10") + end(),
    # ASP.NET: a preamble is scanned for `--B` anywhere (MultipartBoundary(.., false)),
    # not only at a line start; the gateway looks for CRLF--B.
    "preamble-delimiter-mid-line": (b"x--" + B + b"\r\n" + cd(b'name="n"') + b"\r\n\r\n10\r\n"
                                    + BASE + end()),
}


@pytest.mark.parametrize("name", list(EMULATOR_READS_10))
async def test_emulator_makes_10_gateway_holds_10_or_refuses(name: str) -> None:
    data = EMULATOR_READS_10[name]
    assert field(parse_form(data, CT), "n") == "10"
    try:
        fields = await held(data)
    except MalformedBody:
        return
    assert fields is not None and fields.get("n") == 10, fields


# ASP.NET only (by its source; the emulator refuses this body): `--B--x` is not the
# close delimiter (MultipartReaderStream: remainder.Trim() must equal "--"; anything else
# is only a Debug.Assert), so the part after it is read. The gateway stops at `--B--`.
ASPNET_READS_10 = {
    "close-delimiter-with-tail": BASE + b"--" + B + b"--x\r\n" + cd(b'name="n"')
    + b"\r\n\r\n10\r\n" + end(),
    # MIME-encoded filename decoding to "": FileName empty -> a form field in ASP.NET
    "filename-mime-empty": BASE + part([cd(b'name="n"; filename="=?utf-8?B??="')], b"10") + end(),
}


async def held_10_or_refused(data: bytes) -> None:
    try:
        fields = await held(data)
    except MalformedBody:
        return
    assert fields is not None and fields.get("n") == 10, fields


@pytest.mark.parametrize("name", list(ASPNET_READS_10))
async def test_aspnet_reads_10_gateway_holds_10_or_refuses(name: str) -> None:
    await held_10_or_refused(ASPNET_READS_10[name])


# --- the model a /v1 (api: v1) deployment runs: the upstream binds the first `model` ---

async def test_a_model_hidden_from_the_gateway_is_the_one_the_upstream_binds() -> None:
    from azure_openai_proxy.gateway.chatfiles import check_form_names
    data = (part([cd(b"name=model\x0b")], b"o3-mini")          # ASP.NET/emulator: `model`
            + part([cd(b'name="model"')], b"gpt-4o-mini")      # the gateway's only `model`
            + part([cd(b'name="file"; filename="a.wav"')], b"RIFF") + end())
    assert field(parse_form(data, CT), "model") == "o3-mini"
    spool = await _spool(data)
    try:
        try:
            check_form_names(spool, B)
            found = spool.form_field("model", B)
        except MalformedBody:
            return
        assert found is not None and found[0] == "o3-mini", found
    finally:
        spool.close()


# --- batchcheck.py still has its own reader (not in this branch's diff) --------------

async def test_a_batch_file_hidden_from_batchcheck() -> None:
    from azure_openai_proxy.gateway.batchcheck import _uploaded_models
    from azure_openai_proxy.gateway.chatfiles import check_form_names
    good = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o-mini"}}\n'
    evil = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"o3-mini"}}\n'
    data = (part([cd(b'name="purpose"')], b"batch")
            + part([cd("filename=\"b.jsonl\"; name=file\u00a0".encode())], evil)  # ASP.NET: `file`, first
            + part([cd(b'name="file"; filename="a.jsonl"')], good) + end())
    assert parse_form(data, CT)["file"][0].data == evil
    spool = await _spool(data)
    try:
        try:
            check_form_names(spool, B)  # what the pipeline runs for a key with an allow-list
        except MalformedBody:
            return
        models = _uploaded_models(spool, B)
        assert models != frozenset({"gpt-4o-mini"}), models
    finally:
        spool.close()


# --- JSON: `Model` beside `model` for a key with a budget and no allow-list ------------

def test_a_budget_keys_Model_in_other_letters_is_refused() -> None:
    """On an `api: v1` deployment the body's model names the deployment that runs; an
    upstream binding JSON case-insensitively (last spelling wins) runs `Model`'s, while
    the gateway routes and prices by `model`'s. pipeline.py passes model=bool(models):
    False for a key with a budget and no allow-list, and PRICED_TOP_NAMES lacks `model`."""
    from azure_openai_proxy.gateway.affinity import ReferenceKeyCased
    from azure_openai_proxy.gateway.chatfiles import check_top_names
    with pytest.raises(ReferenceKeyCased):
        check_top_names({"model": "gpt-4o-mini", "input": "x", "Model": "gpt-4o"},
                        model=False, chat=False)


# --- legitimate clients' forms: read ---------------------------------------------------

LEGIT = {
    # Go's mime/multipart (quoteEscaper), curl before 7.81, Spring: `"` as `\"`
    "go-escaped-quote": part([cd(b'name="image"; filename="a\\"b.png"')], PNG),
    # httpx and requests: a file name ending in a backslash
    "trailing-backslash": part([cd(b'name="image"; filename="dir\\\\"')], PNG),
    # .NET: unquoted token names, `filename*`
    "dotnet": part([cd(b"name=image; filename=a.png; filename*=utf-8\'\'a.png")], PNG),
    # a leading CRLF before the first delimiter
    "leading-crlf": b"\r\n" + part([cd(b'name="image"; filename="a.png"')], PNG),
}


@pytest.mark.parametrize("name", list(LEGIT))
async def test_a_legitimate_clients_form_is_read(name: str) -> None:
    data = LEGIT[name] + part([cd(b'name="model"')], b"gpt-image-1") + part(
        [cd(b'name="n"')], b"2") + end()
    assert field(parse_form(data.removeprefix(b"\r\n"), CT), "n") == "2"
    fields = await held(data)
    assert fields is not None and fields["n"] == 2 and fields["model"] == "gpt-image-1"
    spool = await _spool(data)
    try:
        assert [p.is_file for p in spool.parts(B)] == [True, False, False]
    finally:
        spool.close()


@pytest.mark.parametrize(("tail", "refused"), [
    (b"--" + B + b"--x\r\n", True), (b"--" + B + b"--  \r\nepilogue", False),
    (b"--" + B + b"--", False), (b"--" + B + b"--\t", False)])
async def test_the_closing_delimiter_line_holds_only_padding(tail: bytes, refused: bool) -> None:
    data = part([cd(b'name="n"')], b"2") + tail
    if refused:
        with pytest.raises(MalformedBody, match="closing boundary"):
            await held(data)
    else:
        fields = await held(data)
        assert fields is not None and fields["n"] == 2


async def test_a_batch_upload_naming_its_file_twice_in_any_letters_is_not_trusted() -> None:
    """batchcheck reads the one reading of the form: `File` is `file` to a
    case-insensitive binder, so two of them leave the file's models unknown (a batch
    from it is then refused to a key with an allow-list)."""
    from azure_openai_proxy.gateway.batchcheck import _uploaded_models
    good = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o-mini"}}\n'
    evil = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"o3-mini"}}\n'
    one = part([cd(b'name="purpose"')], b"batch") + part(
        [cd(b'name="file"; filename="a.jsonl"')], good)
    spool = await _spool(one + end())
    try:
        assert _uploaded_models(spool, B) == frozenset({"gpt-4o-mini"})
    finally:
        spool.close()
    spool = await _spool(part([cd(b'name="File"; filename="b.jsonl"')], evil) + one + end())
    try:
        assert _uploaded_models(spool, B) is None
    finally:
        spool.close()

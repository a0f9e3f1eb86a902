"""Session 18's fourth review (of the second fix of gateway/formparts.py): legitimate
clients' file names holding Unicode white space (a macOS screenshot's U+202F, Japanese
U+3000) and the .NET SDKs' MIME-encoded filename beside `filename*` are read; a closing
delimiter padded past the reader's window and `filename*` values ASP.NET cannot decode
(quoted, a `'` too many) are refused. The reviewer's reproducers."""
from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.gateway.formparts import read_parts
from tests.unit.test_s18_form_parts import PNG, B, end, part
from tests.unit.test_s18_form_parts import held as held_as
from tests.unit.test_s18_form_review import held_10_or_refused as first_review_case


def cd(params: bytes) -> bytes:
    return b"Content-Disposition: form-data; " + params


async def held(data: bytes, operation: str = "images/edits") -> Any:
    return await held_as(data, operation)


BASE = (part([cd(b'name="model"')], b"gpt-image-1")
        + part([cd(b'name="image"; filename="a.png"'), b"Content-Type: image/png"], PNG)
        + part([cd(b'name="prompt"')], b"a cat"))


# F1. ASP.NET MultipartReaderStream.ReadBoundaryAsync: remainder = ReadLine(limit 100).Trim();
# final only if it equals "--". `--B--` + 70 spaces + `x` is NOT final: ASP.NET reads the
# "epilogue" as the next part (n=10). The gateway's tail check looks at 66 bytes only.
ASPNET_READS_10 = {
    "close-delimiter-long-padding-then-junk": BASE + b"--" + B + b"--" + b" " * 70 + b"x\r\n"
    + cd(b'name="n"') + b"\r\n\r\n10\r\n" + end(),
    # F2. ContentDispositionHeaderValue.GetName("filename*") -> TryDecode5987(raw value):
    # the raw value keeps its quotes, parts[0] = '"utf-8' -> Encoding.GetEncoding throws ->
    # null: no FileNameStar -> IsFormDisposition -> a FIELD `n`. Gateway: strips the quotes,
    # decodes "x" -> a file, skipped.
    "filename-star-quoted": BASE + part([cd(b"name=\"n\"; filename*=\"utf-8''x\"")], b"10") + end(),
    # F2b. TryDecode5987 needs exactly 3 pieces split on `'` (a token char): 4 -> null -> field.
    "filename-star-extra-quote": BASE + part([cd(b"name=\"n\"; filename*=utf-8''a'b")], b"10") + end(),
    "filename-star-lang-quote": BASE + part([cd(b"name=\"n\"; filename*=utf-8'en'x'")], b"10") + end(),
}


@pytest.mark.parametrize("name", [n for n in ASPNET_READS_10 if "star" in n])
def test_the_emulator_reads_the_filename_star_part_as_field_n(name: str) -> None:
    from azure_openai_proxy.emulator.multipart import field, parse_form
    assert field(parse_form(ASPNET_READS_10[name], "multipart/form-data; boundary=XyZ123"),
                 "n") == "10"


@pytest.mark.parametrize("name", list(ASPNET_READS_10))
async def test_aspnet_reads_10_gateway_holds_10_or_refuses(name: str) -> None:
    await first_review_case(ASPNET_READS_10[name])


# F3. Legitimate browser / SDK uploads whose filename holds .NET white space inside the
# quotes (ASP.NET only trims the ends of the whole header value, which end in `"`): macOS
# screenshot names hold U+202F before AM/PM, Japanese names U+3000, copy-pasted names NBSP.
LEGIT_FILENAMES = {
    "macos-screenshot-u202f": "Screenshot 2024-05-01 at 10.00.00\u202fAM.png",
    "ideographic-space-u3000": "\u65b0\u3057\u3044\u3000\u753b\u50cf.png",
    "nbsp": "my\u00a0photo.png",
    "thin-space": "a\u2009b.png",
}


@pytest.mark.parametrize("name", list(LEGIT_FILENAMES))
def test_a_utf8_filename_with_unicode_space_is_read(name: str) -> None:
    filename = LEGIT_FILENAMES[name].encode()
    data = (part([cd(b'name="image"; filename="' + filename + b'"'),
                  b"Content-Type: image/png"], PNG)
            + part([cd(b'name="model"')], b"gpt-image-1") + end())
    parts = read_parts(data, B)
    assert [(p.name, p.is_file) for p in parts] == [("image", True), ("model", False)]


# F3b. the same, through httpx's own encoder (what the openai SDK sends)
def test_httpx_upload_of_a_macos_screenshot_is_read() -> None:
    import httpx
    request = httpx.Request("POST", "http://x/v1/images/edits", data={"model": "gpt-image-1",
                            "prompt": "a cat"},
                            files={"image": ("Screenshot 2024-05-01 at 10.00.00\u202fAM.png",
                                             PNG, "image/png")})
    body = request.read()
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    parts = read_parts(body, boundary)
    assert {p.name for p in parts} == {"model", "prompt", "image"}

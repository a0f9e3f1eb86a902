"""End to end, session 18's fourth review of the form reader: a static client key's and
a virtual key's uploads whose file names hold Unicode white space or come from the .NET
SDKs (a MIME-encoded filename beside `filename*`) are served (the second fix refused
them), and a budget-only key's form naming `Model` beside `model` is a 400."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, Emulator, ServerThread, client, emulator, gateway, start_gateway  # noqa: F401
from tests.e2e.test_gateway_routes import _tiny_png

SCREENSHOT = "Screenshot 2024-05-01 at 10.00.00\u202fAM.png"  # macOS since Ventura


def test_openai_sdk_edit_of_a_macos_screenshot(client: Any, emulator: Emulator) -> None:  # noqa: F811
    image = client.images.edit(model="dall-e-3", image=(SCREENSHOT, _tiny_png(), "image/png"),
                               prompt="add a hat", response_format="b64_json")
    assert image.data[0].b64_json


B = "Fm3k=Q_0aZ9"


@pytest.mark.parametrize("filename", ["caf\u00e9.png", "\u753b\u50cf.png"])
def test_dotnet_sdk_edit_of_a_non_ascii_file_name(gateway: ServerThread, filename: str,  # noqa: F811
                                                  emulator: Emulator) -> None:  # noqa: F811
    """System.Net.Http MultipartFormDataContent.Add(content, name, fileName) (openai-dotnet,
    Azure.AI.OpenAI) writes a non-ASCII file name as a MIME word plus filename*."""
    import base64
    from urllib.parse import quote
    word = "=?utf-8?B?" + base64.b64encode(filename.encode()).decode() + "?="
    body = b""
    for name, value in (("model", "dall-e-3"), ("prompt", "add a hat"),
                        ("response_format", "b64_json")):
        body += (f"--{B}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Disposition: form-data; name={name}\r\n\r\n{value}\r\n").encode()
    body += (f"--{B}\r\nContent-Disposition: form-data; name=image; filename=\"{word}\"; "
             f"filename*=utf-8''{quote(filename)}\r\n\r\n").encode() + _tiny_png() + b"\r\n"
    body += f"--{B}--\r\n".encode()
    answer = httpx.post(gateway.url + "/v1/images/edits", content=body, timeout=30,
                        headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                 "Content-Type": f'multipart/form-data; boundary="{B}"'})
    assert answer.status_code == 200, answer.text


from azure_openai_proxy.governance.model import Limits  # noqa: E402
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: E402,F401


def test_a_budget_keys_form_with_Model_beside_model_is_refused(governed: Governed) -> None:  # noqa: F811
    """The JSON fix (PRICED_TOP_NAMES gains `model`) leaves the form path open: pipeline.py
    runs check_form_names only `elif models` (an allow-list), and held_fields reads only
    the exact `model` (not in _PRICING_FIELDS), so `Model` first, `model` second is served
    to a budget-only key; ASP.NET's case-insensitive form binds the first (`Model`)."""
    _, secret = governed.key("b", limits=Limits(budget_usd=100.0))
    body = b""
    for name, value in (("Model", "o3-mini"), ("model", "dall-e-3"), ("prompt", "add a hat"),
                        ("response_format", "b64_json")):
        body += (f"--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    body += (f"--{B}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
             "Content-Type: image/png\r\n\r\n").encode() + _tiny_png() + b"\r\n"
    body += f"--{B}--\r\n".encode()
    answer = httpx.post(governed.server.url + "/v1/images/edits", content=body, timeout=30,
                        headers={"Authorization": f"Bearer {secret}",
                                 "Content-Type": f'multipart/form-data; boundary="{B}"'})
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])


def test_openai_sdk_file_upload_of_a_macos_screenshot(client: Any) -> None:  # noqa: F811
    uploaded = client.files.create(file=(SCREENSHOT, _tiny_png(), "image/png"), purpose="vision")
    assert uploaded.id


def test_governed_file_upload_of_a_macos_screenshot(governed: Governed) -> None:  # noqa: F811
    _, secret = governed.key("lim", models=("gpt-4o",))
    uploaded = governed.client(secret).files.create(
        file=(SCREENSHOT.replace(".png", ".jsonl"),
              b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o","messages":[]}}\n'),
        purpose="batch")
    assert uploaded.id

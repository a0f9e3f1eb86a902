"""End to end: a form as System.Net.Http's MultipartFormDataContent writes it (the
openai-dotnet / Azure.AI.OpenAI SDKs: `name=response_format`, unquoted, since the name
is a token), sent on the native deployment path as AzureOpenAIClient does, by a virtual
key with an RPM limit only (no budget: it takes `hold`, so `held_fields` runs). Served
before a80948d, a 400 after it (found by session 18's review); served again now that
the form is read as its upstream reads it (gateway/formparts.py)."""

from __future__ import annotations

import httpx

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator, emulator  # noqa: F401
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)
from tests.support import silent_wav

B = "Fm3k=Q_0aZ9"


def _dotnet_form(fields: dict[str, str], wav: bytes) -> bytes:
    out = b""
    for name, value in fields.items():
        out += (f"--{B}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Disposition: form-data; name={name}\r\n\r\n{value}\r\n").encode()
    out += (f"--{B}\r\nContent-Disposition: form-data; name=file; filename=a.wav; "
            f"filename*=utf-8''a.wav\r\n\r\n").encode() + wav + b"\r\n"
    return out + f"--{B}--\r\n".encode()


def test_a_dotnet_sdk_transcription_is_served(governed: Governed,  # noqa: F811
                                              emulator: Emulator) -> None:  # noqa: F811
    _, secret = governed.key("dotnet", limits=Limits(rpm=100))
    body = _dotnet_form({"response_format": "verbose_json"}, silent_wav(1))
    answer = httpx.post(
        governed.server.url + "/openai/deployments/whisper/audio/transcriptions"
        "?api-version=2024-10-21", content=body, timeout=30,
        headers={"api-key": secret,
                 "Content-Type": f'multipart/form-data; boundary="{B}"'})
    assert answer.status_code == 200, answer.text
    assert answer.json()["duration"] > 0


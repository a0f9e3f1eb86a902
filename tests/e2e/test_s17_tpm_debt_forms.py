"""A TPM in debt refuses a form's work too (review of 92fec1d): "no TPM refuses a
request of 0 tokens" was meant for the free count and a GET, but a multipart request
(`audio/transcriptions`, `images/edits`: no JSON, so its work is not estimated and it
reserved 0 tokens) passed a TPM in debt as well, though gpt-4o-transcribe and
gpt-image-1 edits are billed and settled by tokens: only the RPM stopped them. A request
that names a model now takes a token at least, on the usual short path and `hold`."""

from __future__ import annotations

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)
from tests.support import silent_wav


@pytest.mark.parametrize("limits", [Limits(tpm=300), Limits(rpm=100, tpm=300)],
                         ids=["general", "usual"])
def test_a_tpm_in_debt_refuses_a_transcription_and_still_serves_a_get(
        governed: Governed, emulator: Emulator, limits: Limits) -> None:  # noqa: F811
    _, secret = governed.key("debt", limits=limits)
    client = governed.client(secret)
    # 600 punctuation marks: ~150 tokens by the gateway's estimate, ~600 by Azure's count
    # (the emulator counts each mark): settled, the bucket goes below zero
    answer = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "." * 600}], max_tokens=1)
    assert answer.usage is not None and answer.usage.total_tokens > 300
    before = len(emulator.requests())
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            client.audio.transcriptions.create(model="whisper", file=("a.wav", silent_wav(1)))
    assert len(emulator.requests()) == before  # none sent
    assert client.models.list().data  # a GET runs no model: the debt does not refuse it

"""`normalize_answer` (the relay's) refuses an answer that is not a JSON object, which
`normalize_body` hands back unchanged (session 23, branch advstream)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.normalize.body import AnswerNotJson, normalize_answer, normalize_body

JUNK = [b"", b"   ", b"<html>Sign in</html>", b'{"id": "chatcmpl-1", "choi', b"[1, 2]", b"null",
        b'"a string"', b"\xff\xfe"]


@pytest.mark.parametrize("junk", JUNK)
@pytest.mark.parametrize(("model", "keep"), [("gpt-4o", True), ("gpt-4o", False),
                                             (None, True), (None, False)])
def test_an_answer_that_is_not_a_json_object_is_refused(
        junk: bytes, model: str | None, keep: bool) -> None:
    with pytest.raises(AnswerNotJson):
        normalize_answer(junk, client_model=model, keep_azure_fields=keep)
    assert normalize_body(junk, client_model=model, keep_azure_fields=keep) is junk


@pytest.mark.parametrize("keep", [True, False])
def test_an_object_without_usage_or_model_passes(keep: bool) -> None:
    body = b'{"object": "list", "data": []}'
    assert normalize_answer(body, client_model=None, keep_azure_fields=keep) == (body, None)

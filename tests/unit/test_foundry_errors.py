"""Azure AI model inference's (Foundry's) own error bodies, made OpenAI's: its `detail`
400 for parameters its schema lacks, and its 422 with pydantic's `details`."""

from __future__ import annotations

import orjson

from azure_openai_proxy.normalize.upstream_errors import translate_upstream_error

_PROMPT = "a long private prompt " * 50


def _translated(status: int, body: object) -> tuple[int, dict[str, object]]:
    error = translate_upstream_error(status, {}, orjson.dumps(body), client_model="deepseek",
                                     deployment="DeepSeek-R1")
    return error.http_status, error.body()["error"]


def test_the_extra_parameters_400_names_the_parameter() -> None:
    detail = ("Extra parameters ['top_k'] are not allowed when extra-parameters is not set "
              "or set to be 'error'. Set extra-parameters to 'pass-through' to pass to the model.")
    status, error = _translated(400, {"detail": detail})
    assert status == 400
    assert (error["message"], error["param"], error["code"]) == (detail, "top_k",
                                                                 "unknown_parameter")


def test_a_422_says_what_was_invalid_and_where_never_the_input() -> None:
    # As LiteLLM#11844 and litellm#4815 quote it (an Azure AI DeepSeek / Jamba deployment).
    body = {"error": {"code": "Invalid input", "status": 422, "message": "invalid input error",
                      "details": [{"type": "literal_error", "loc": ["body", "messages", 0, "role"],
                                   "msg": "Input should be 'user', 'assistant' or 'system'",
                                   "input": _PROMPT},
                                  {"type": "extra_forbidden", "loc": ["body", "user"],
                                   "msg": "Extra inputs are not permitted", "input": "alice"}]}}
    status, error = _translated(422, body)
    assert status == 422
    assert error["message"] == (
        "invalid input error: Input should be 'user', 'assistant' or 'system' "
        "(messages.0.role); Extra inputs are not permitted (user)")
    assert error["param"] == "messages.0.role"
    assert _PROMPT.strip() not in str(error)


def test_details_that_are_not_validation_errors_change_nothing() -> None:
    for details in ("text", [1, None, {"msg": 5}], {"msg": "x"}):
        _, error = _translated(422, {"error": {"message": "invalid input error",
                                               "details": details}})
        assert (error["message"], error["param"]) == ("invalid input error", None)


def test_the_parameter_not_supported_422_names_where_never_the_input() -> None:
    # Microsoft's Azure AI Model Inference API reference: a model that does not take a
    # parameter answers this, at the top level, its `detail` saying where and echoing it.
    body = {"status": 422, "code": "parameter_not_supported",
            "detail": {"loc": ["body", "messages", 0, "content"], "input": _PROMPT},
            "message": "One of the parameters contain invalid values."}
    status, error = _translated(422, body)
    assert status == 422
    assert error["message"] == "One of the parameters contain invalid values. (messages.0.content)"
    assert (error["param"], error["code"]) == ("messages.0.content", "parameter_not_supported")
    assert _PROMPT.strip() not in str(error)
    body["detail"] = {"loc": ["query", "api-version"], "input": "x"}  # not in the body
    assert _translated(422, body)[1]["param"] is None

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.emulator.routing import Route, resolve


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/openai/deployments/gpt-4o/chat/completions", Route("chat", False, "gpt-4o")),
        ("POST", "/openai/deployments/d/completions", Route("completions", False, "d")),
        ("POST", "/openai/deployments/d/embeddings", Route("embeddings", False, "d")),
        ("POST", "/openai/deployments/w/audio/transcriptions", Route("transcriptions", False, "w")),
        ("POST", "/openai/deployments/w/audio/translations", Route("translations", False, "w")),
        ("POST", "/openai/deployments/t/audio/speech", Route("speech", False, "t")),
        ("POST", "/openai/deployments/i/images/generations",
         Route("image_generations", False, "i")),
        ("POST", "/openai/deployments/i/images/edits", Route("image_edits", False, "i")),
        ("POST", "/openai/responses", Route("responses", False)),
        ("GET", "/openai/responses/resp_1", Route("response", False, object_id="resp_1", ids=("resp_1",))),
        ("DELETE", "/openai/responses/resp_1", Route("response_delete", False, object_id="resp_1", ids=("resp_1",))),
        ("POST", "/openai/files", Route("file_upload", False)),
        ("GET", "/openai/files/file-1/content", Route("file_content", False, object_id="file-1", ids=("file-1",))),
        ("POST", "/openai/batches/b/cancel", Route("batch_cancel", False, object_id="b", ids=("b",))),
        ("GET", "/openai/models", Route("models", False)),
        ("POST", "/openai/v1/chat/completions", Route("chat", True)),
        ("POST", "/openai/v1/audio/speech", Route("speech", True)),
        ("GET", "/openai/v1/models/gpt-4o", Route("model", True, object_id="gpt-4o", ids=("gpt-4o",))),
    ],
)
def test_known_routes(method: str, path: str, route: Route) -> None:
    assert resolve(method, path) == route


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/openai/deployments/gpt-4o/chat/completions"),
        ("POST", "/openai/deployments/gpt-4o/chat"),
        ("POST", "/openai/chat/completions"),
        ("PUT", "/openai/files"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/"),
        ("POST", "/openai/v1/deployments/x/chat/completions"),
    ],
)
def test_unknown_routes_and_wrong_methods(method: str, path: str) -> None:
    assert resolve(method, path) is None


def test_kind_of_operation() -> None:
    assert resolve("POST", "/openai/responses").kind == "chat"  # type: ignore[union-attr]
    assert resolve("GET", "/openai/files").kind is None  # type: ignore[union-attr]


@given(st.sampled_from(["GET", "POST", "DELETE", "PATCH", "X"]), st.text(max_size=120))
def test_fuzz_resolve_never_raises(method: str, path: str) -> None:
    route = resolve(method, "/openai/" + path)
    assert route is None or isinstance(route, Route)

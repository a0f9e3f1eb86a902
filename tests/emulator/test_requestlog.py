from __future__ import annotations

import hashlib

from azure_openai_proxy.emulator import mask_secret
from azure_openai_proxy.emulator.requestlog import BODY_LIMIT, RequestLog, is_secret_header, record


def test_mask_secret_is_a_short_sha256() -> None:
    assert mask_secret("k") == "sha256:" + hashlib.sha256(b"k").hexdigest()[:12]


def test_secret_headers_are_masked() -> None:
    for name in ("api-key", "Authorization", "X-Token-Thing", "x-client-secret", "Ocp-Apim-Subscription-Key"):
        assert is_secret_header(name)
    assert not is_secret_header("content-type")
    entry = record(method="POST", path="/p", query="a=1&a=2&b=3",
                   query_pairs=[("a", "1"), ("a", "2"), ("b", "3")],
                   headers=[("Api-Key", "secret"), ("Content-Type", "application/json")],
                   body=b'{"x": 1}')
    assert entry["headers"] == {"api-key": mask_secret("secret"),
                                "content-type": "application/json"}
    assert entry["query_params"] == {"a": ["1", "2"], "b": ["3"]}
    assert entry["json"] == {"x": 1} and entry["body_size"] == 8
    assert entry["status"] is None and entry["deployment"] is None and entry["fault"] is None


def test_bodies_are_truncated_and_non_json_kept_as_text() -> None:
    big = b"\xff" + b"a" * (BODY_LIMIT + 10)
    entry = record(method="POST", path="/", query="", query_pairs=[], headers=[], body=big)
    assert entry["body_size"] == len(big) and entry["json"] is None
    assert entry["body"].startswith("\ufffd") and len(entry["body"]) == BODY_LIMIT


def test_log_is_capped_and_clearable() -> None:
    log = RequestLog(capacity=3)
    for i in range(5):
        log.append({"i": i})
    assert [e["i"] for e in log.entries()] == [2, 3, 4]
    log.clear()
    assert log.entries() == []

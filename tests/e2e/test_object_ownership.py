"""Objects Azure creates belong to the virtual key that created them; batches are
checked against the key's allow-list and refused to keys with a budget; the allow-list
on Azure's native paths judges the model a deployment serves (review of issue 13,
findings 2 and 5). The official `openai` SDK through the gateway to the emulator."""

from __future__ import annotations

import inspect
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from azure_openai_proxy.gateway.affinity import MAX_REFERENCE_VALUES
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.test_virtual_keys import HELLO, Governed, governed_gateway
from tests.support import ServerThread, serve


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _batch_file(*models: str) -> Any:
    lines = [json.dumps({"custom_id": str(n), "method": "POST", "url": "/chat/completions",
                         "body": {"model": model, "messages": HELLO}})
             for n, model in enumerate(models)]
    return ("batch.jsonl", io.BytesIO("\n".join(lines).encode() + b"\n"), "application/jsonl")


def _batch(client: openai.OpenAI, file_id: str) -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


def test_a_key_cannot_list_read_or_use_another_keys_files(governed: Governed) -> None:
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b")
    a, b = governed.client(a_secret), governed.client(b_secret)
    uploaded = a.files.create(file=_batch_file("gpt-4o"), purpose="batch")
    assert uploaded.id in [f.id for f in a.files.list()]
    assert a.files.content(uploaded.id).read()
    assert uploaded.id not in [f.id for f in b.files.list()]
    for call in (lambda: b.files.retrieve(uploaded.id),
                 lambda: b.files.content(uploaded.id),
                 lambda: b.files.delete(uploaded.id),
                 lambda: _batch(b, uploaded.id)):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.body["message"] == f"No such object: {uploaded.id}"  # type: ignore[index]
    batch = _batch(a, uploaded.id)
    assert a.batches.retrieve(batch.id).id == batch.id
    assert [x.id for x in a.batches.list()] == [batch.id]
    assert b.batches.list().data == []
    with pytest.raises(openai.NotFoundError):
        b.batches.cancel(batch.id)
    assert a.files.retrieve(uploaded.id).id == uploaded.id  # still a's


def test_an_object_of_unknown_owner_is_refused_to_a_restricted_key_only(
        governed: Governed) -> None:
    static = openai.OpenAI(base_url=governed.server.url + "/v1", api_key=CLIENT_KEY,
                           max_retries=0)
    unknown = static.files.create(file=_batch_file("gpt-4o"), purpose="batch")
    _, free = governed.key("free")
    _, listed = governed.key("listed", models=("gpt-4o",))
    _, budgeted = governed.key("budgeted", limits=Limits(budget_usd=100.0))
    assert governed.client(free).files.retrieve(unknown.id).id == unknown.id
    for secret in (listed, budgeted):
        with pytest.raises(openai.NotFoundError):
            governed.client(secret).files.retrieve(unknown.id)


def test_a_batch_is_checked_against_the_keys_allow_list(governed: Governed) -> None:
    _, secret = governed.key("mini-only", models=("gpt-4o-mini",))
    client = governed.client(secret)
    with pytest.raises(openai.NotFoundError):  # directly: refused
        client.chat.completions.create(model="o3-mini", messages=HELLO)
    bad = client.files.create(file=_batch_file("gpt-4o-mini", "o3-mini"), purpose="batch")
    with pytest.raises(openai.NotFoundError) as refused:
        _batch(client, bad.id)
    assert refused.value.code == "model_not_found"
    assert "o3-mini" in refused.value.body["message"]  # type: ignore[index]
    good = client.files.create(file=_batch_file("gpt-4o-mini"), purpose="batch")
    assert _batch(client, good.id).input_file_id == good.id


def test_a_key_with_a_budget_may_not_make_a_batch(governed: Governed) -> None:
    _, secret = governed.key("budget", limits=Limits(budget_usd=100.0))
    client = governed.client(secret)
    uploaded = client.files.create(file=_batch_file("gpt-4o"), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _batch(client, uploaded.id)
    assert refused.value.code == "not_metered"


def test_the_native_path_checks_the_model_a_deployment_serves(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    database = tmp_path / "gateway.db"
    deployment = {"model_name": "gpt-3.5-turbo", "deployment_name": "gpt-35-turbo",
                  "endpoint": emulator.url, "api_key": AZURE_KEY,
                  "api_version": "2025-04-01-preview"}
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                deployment_config=[deployment])
    store = KeyStore.open(database)
    try:
        gw = Governed(start_gateway(settings), database, store)
        _, by_model = gw.key("by-model", models=("gpt-3.5-turbo",))
        _, by_name = gw.key("by-deployment-name", models=("gpt-35-turbo",))

        def native(secret: str) -> openai.AzureOpenAI:
            return openai.AzureOpenAI(azure_endpoint=gw.server.url, api_key=secret,
                                      api_version="2024-10-21", max_retries=0)

        assert native(by_model).chat.completions.create(model="gpt-35-turbo",
                                                        messages=HELLO).choices
        assert gw.client(by_model).chat.completions.create(model="gpt-3.5-turbo",
                                                           messages=HELLO).choices
        # The deployment's name is not a model: the allow-list names models.
        with pytest.raises(openai.NotFoundError):
            native(by_name).chat.completions.create(model="gpt-35-turbo", messages=HELLO)
        assert [m.id for m in gw.client(by_model).models.list()] == ["gpt-3.5-turbo"]
    finally:
        store.close()


def test_a_reload_keeps_who_owns_what(governed: Governed) -> None:
    _, secret = governed.key("owner", models=("gpt-4o",))
    client = governed.client(secret)
    uploaded = client.files.create(file=_batch_file("gpt-4o"), purpose="batch")
    app = governed.server.app

    async def reload() -> None:
        app.reload(app.gateway.settings)

    governed.server.call(reload)
    assert client.files.retrieve(uploaded.id).id == uploaded.id  # still known as the key's
    assert _batch(client, uploaded.id).input_file_id == uploaded.id


def test_another_worker_and_a_restart_know_who_owns_what(
        tmp_path: Path, emulator: Emulator) -> None:
    """Two gateways on one database are two workers; the one started after both stopped
    is a restart. Owners live in the database, not in one worker's memory."""
    database = tmp_path / "gateway.db"
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}")
    store = KeyStore.open(database)
    try:
        with serve(lambda: create_app(settings)) as one, serve(lambda: create_app(settings)) as two:
            first, second = Governed(one, database, store), Governed(two, database, store)
            _, a = first.key("a", models=("gpt-4o",))
            _, b = first.key("b")
            second.known(a)
            second.known(b)
            uploaded = first.client(a).files.create(file=_batch_file("gpt-4o"),
                                                    purpose="batch")
            assert second.client(a).files.retrieve(uploaded.id).id == uploaded.id
            assert uploaded.id in [f.id for f in second.client(a).files.list()]
            with pytest.raises(openai.NotFoundError):
                second.client(b).files.retrieve(uploaded.id)
            assert _batch(second.client(a), uploaded.id).input_file_id == uploaded.id
        with serve(lambda: create_app(settings)) as three:
            restarted = Governed(three, database, store)
            restarted.known(a)
            assert restarted.client(a).files.retrieve(uploaded.id).id == uploaded.id
            with pytest.raises(openai.NotFoundError):
                restarted.client(b).files.retrieve(uploaded.id)
    finally:
        store.close()


def _refused(call: Callable[[], Any], object_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        call()
    assert refused.value.body["message"] == f"No such object: {object_id}"  # type: ignore[index]


@pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")  # Assistants
def test_a_key_cannot_use_another_keys_objects_by_reference(
        governed: Governed, emulator: Emulator) -> None:
    """Issue 13, review: every reference in a body is checked, not only six flat fields;
    refused at the gateway (Azure never sees the request)."""
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b")
    a, b = governed.client(a_secret), governed.client(b_secret)
    file_id = a.files.create(file=_batch_file("gpt-4o"), purpose="assistants").id
    response_id = a.responses.create(model="gpt-4o", input="hi").id
    seen = len(emulator.requests())
    attachment = [{"file_id": file_id, "tools": [{"type": "file_search"}]}]
    for call in (
        lambda: b.vector_stores.create(name="v", file_ids=[file_id]),
        lambda: b.beta.assistants.create(
            model="gpt-4o", tools=[{"type": "code_interpreter"}],
            tool_resources={"code_interpreter": {"file_ids": [file_id]}}),
        lambda: b.beta.assistants.create(
            model="gpt-4o", tool_resources={"file_search": {
                "vector_stores": [{"file_ids": [file_id]}]}}),
        lambda: b.beta.threads.create(messages=[
            {"role": "user", "content": "look", "attachments": attachment}]),
        lambda: b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id),
        lambda: b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-mine",
                                          validation_file=file_id),
        lambda: b.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
            {"type": "input_file", "file_id": file_id}]}]),
        lambda: b.responses.create(model="gpt-4o", input="hi", tools=[
            {"type": "file_search", "vector_store_ids": [file_id]}]),
    ):
        _refused(call, file_id)
    _refused(lambda: b.responses.create(model="gpt-4o", input="more",
                                        previous_response_id=response_id), response_id)
    _refused(lambda: b.post("/threads/thread_b/messages", cast_to=object, body={
        "role": "user", "content": "x", "attachments": attachment}), file_id)
    _refused(lambda: b.post("/vector_stores/vs_b/file_batches", cast_to=object,
                            body={"file_ids": ["file-b", file_id]}), file_id)
    _refused(lambda: b.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": [{"type": "text", "text": "read"},
                                     {"type": "file", "file": {"file_id": file_id}}]}]),
             file_id)
    assert len(emulator.requests()) == seen  # none of them reached Azure
    # The owner may.
    assert a.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "hi"}]}], previous_response_id=response_id).id


def test_ids_past_the_first_in_a_path_are_checked(governed: Governed) -> None:
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b")
    a, b = governed.client(a_secret), governed.client(b_secret)
    response_id = a.responses.create(model="gpt-4o", input="hi").id
    # b's own thread (unknown to the gateway: let through to an unrestricted key), a's
    # object named as a sub-object of it.
    _refused(lambda: b.get(f"/threads/thread_b/runs/{response_id}", cast_to=object),
             response_id)
    _refused(lambda: b.get(f"/vector_stores/vs_b/files/{response_id}", cast_to=object),
             response_id)


def test_a_body_too_deep_to_check_gets_a_400(governed: Governed, emulator: Emulator) -> None:
    _, secret = governed.key("k")
    nested: dict[str, Any] = {"file_id": "file-x"}
    for _ in range(100):
        nested = {"a": nested}
    seen = len(emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        governed.client(secret).post("/vector_stores", cast_to=object, body=nested)
    assert "nested deeper than 32 levels" in refused.value.body["message"]  # type: ignore[index]
    assert len(emulator.requests()) == seen


def test_a_list_of_ids_too_long_to_check_gets_a_400(governed: Governed,
                                                    emulator: Emulator) -> None:
    # Found by review: an id list was walked uncounted, and each id cost a lookup.
    _, secret = governed.key("k")
    client = governed.client(secret)
    seen = len(emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/vector_stores", cast_to=object,
                    body={"file_ids": ["file-x"] * (MAX_REFERENCE_VALUES + 1)})
    assert "more than 50000 values" in refused.value.body["message"]  # type: ignore[index]
    part = {"type": "file", "file": {"file_id": "file-x"}}
    with pytest.raises(openai.BadRequestError):
        client.post("/chat/completions", cast_to=object, body={
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": [part] * (MAX_REFERENCE_VALUES + 1)}]})
    assert len(emulator.requests()) == seen


class _BatchLineSpy:
    """orjson.loads, still the real one, that notes every batch line of this test it
    reads (the gateway's, not the emulator's) and can hold the first one until released: where the gateway parses an
    uploaded batch file (on its event loop or off it) shows in what a concurrent request
    can do meanwhile."""

    MARKER = b'"custom_id": "spied"'

    def __init__(self, hold: bool) -> None:
        self.real = orjson.loads
        self.hold = hold
        self.started = threading.Event()
        self.release = threading.Event()
        self.lines = 0

    def __call__(self, data: Any) -> Any:
        caller = inspect.currentframe()
        by_gateway = caller is not None and caller.f_back is not None and str(
            caller.f_back.f_globals.get("__name__")).startswith("azure_openai_proxy.gateway")
        if by_gateway and isinstance(data, bytes) and self.MARKER in data:
            self.lines += 1
            if self.hold and not self.started.is_set():
                self.started.set()
                self.release.wait(10)
        return self.real(data)


def _spied_file(*models: str) -> Any:
    lines = [json.dumps({"custom_id": "spied", "method": "POST", "url": "/chat/completions",
                         "body": {"model": model, "messages": HELLO}}) for model in models]
    return ("batch.jsonl", io.BytesIO("\n".join(lines).encode() + b"\n"), "application/jsonl")


def test_an_uploaded_batch_file_is_read_off_the_event_loop(
        governed: Governed, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = governed.key("mini-only", models=("gpt-4o-mini",))
    client = governed.client(secret)
    spy = _BatchLineSpy(hold=True)
    monkeypatch.setattr(orjson, "loads", spy)
    uploaded: list[Any] = []
    upload = threading.Thread(target=lambda: uploaded.append(client.files.create(
        file=_spied_file("gpt-4o-mini", "o3-mini"), purpose="batch")))
    upload.start()
    try:
        assert spy.started.wait(10), "the gateway never read the batch file"
        # The file's first line is being read, and held: the gateway still answers.
        answered = httpx.get(governed.server.url + "/v1/models", timeout=5,
                             headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert answered.status_code == 200
    finally:
        spy.release.set()
        upload.join(30)
    assert spy.lines == 2
    with pytest.raises(openai.NotFoundError) as refused:  # the allow-list still holds
        _batch(client, uploaded[0].id)
    assert "o3-mini" in refused.value.body["message"]  # type: ignore[index]


def test_an_uploaded_batch_file_is_read_only_for_an_allow_list_and_once_admitted(
        governed: Governed, monkeypatch: pytest.MonkeyPatch) -> None:
    _, free = governed.key("free")
    _, limited = governed.key("limited", models=("gpt-4o-mini",), limits=Limits(rpm=1))
    spy = _BatchLineSpy(hold=False)
    monkeypatch.setattr(orjson, "loads", spy)
    governed.client(free).files.create(file=_spied_file("gpt-4o-mini"), purpose="batch")
    assert spy.lines == 0  # no allow-list: nothing to check a batch against
    client = governed.client(limited)
    with pytest.raises(openai.RateLimitError):
        for _ in range(2):  # the RPM of 1 is spent
            client.models.list()
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.files.create(file=_spied_file("gpt-4o-mini"), purpose="batch")
    assert spy.lines == 0  # refused by the limiter before it was read


def test_a_repeated_key_cannot_hide_a_reference_from_the_check(
        governed: Governed, emulator: Emulator) -> None:
    """Review of the governed path (finding F3): orjson keeps the last of two repeated
    keys, so a body could show the check a plain message or a harmless id while the
    bytes sent carried another key's object under the first. What was checked is what
    is sent: Azure never reads the hidden reference."""
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b")
    a = governed.client(a_secret)
    file_id = a.files.create(file=_batch_file("gpt-4o"), purpose="assistants").id
    response_id = a.responses.create(model="gpt-4o", input="hi").id
    headers = {"Authorization": f"Bearer {b_secret}", "Content-Type": "application/json"}
    part = json.dumps({"type": "file", "file": {"file_id": file_id}})
    chat = ('{"model": "gpt-4o", "messages": [{"role": "user", "content": [' + part +
            '], "content": "hi"}]}')
    reply = httpx.post(governed.server.url + "/v1/chat/completions", content=chat,
                       headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert file_id not in emulator.last()["body"]
    escaped = part.replace('"file": {', '"fil\\u0065": {')  # the key spelled with an escape
    reply = httpx.post(governed.server.url + "/v1/chat/completions", headers=headers,
                       content=chat.replace(part, escaped), timeout=30)
    assert reply.status_code == 200, reply.text
    assert file_id not in emulator.last()["body"]
    responses = ('{"model": "gpt-4o", "input": "more", "previous_response_id": "'
                 + response_id + '", "previous_response_id": null}')
    httpx.post(governed.server.url + "/v1/responses", content=responses, headers=headers,
               timeout=30)
    sent = [seen["body"] for seen in emulator.requests() if '"more"' in seen["body"]]
    assert sent, "the Responses call reached Azure"
    assert all(response_id not in body for body in sent)


_IMAGE = "data:image/png;base64," + "QUJD" * 400_000  # 1.6 MB inline, as an image is sent


def test_a_large_body_that_repeats_a_key_is_still_sent_as_checked(
        governed: Governed, emulator: Emulator) -> None:
    """The repeated-key test above for a body past the size where the gateway looks for
    a repeated key instead of re-encoding every body (requestbody.py `repeats_a_key`)."""
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b")
    response_id = governed.client(a_secret).responses.create(model="gpt-4o", input="hi").id
    hidden = ('{"model": "gpt-4o", "previous_response_id": "' + response_id + '", "input": '
              '[{"role": "user", "content": [{"type": "input_image", "image_url": "'
              + _IMAGE + '"}]}], "previous_response_id": null}')
    reply = httpx.post(governed.server.url + "/v1/responses", content=hidden, timeout=30,
                       headers={"Authorization": f"Bearer {b_secret}",
                                "Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text
    sent = emulator.last()
    assert sent["json"]["previous_response_id"] is None
    assert response_id not in sent["body"]


def test_a_large_checked_body_that_repeats_no_key_is_sent_as_it_came(
        governed: Governed, emulator: Emulator) -> None:
    """Not re-encoded (a 20 MB image cost about 7 ms an attempt): Azure gets the client's
    own bytes, spacing and all, and the reference in them was checked."""
    _, secret = governed.key("a", models=("gpt-4o",))
    client = governed.client(secret)
    first = client.responses.create(model="gpt-4o", input="hi").id
    body = ('{"model": "gpt-4o", "previous_response_id": "' + first + '", "input": [{"role": '
            '"user", "content": [{"type": "input_text", "text": "What is it?\\n"}, {"type": '
            '"input_image", "image_url": "' + _IMAGE + '"}]}]}').encode()
    reply = httpx.post(governed.server.url + "/v1/responses", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {secret}",
                                "Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text
    sent = emulator.last()
    assert sent["body_size"] == len(body)
    assert sent["body"].encode() == body[:len(sent["body"].encode())]
    assert sent["json"]["previous_response_id"] == first


def test_a_governed_chat_body_is_sent_as_its_limits_read_it(
        governed: Governed, emulator: Emulator) -> None:
    """Not only a hidden file part: a repeated `max_tokens` or `messages` would let the
    key's reservation read the small one while Azure may read the other. Azure gets the
    body the gateway read, whatever the client repeated."""
    _, secret = governed.key("a", models=("gpt-4o",))
    body = ('{"model": "gpt-4o", "max_tokens": 4000, "messages": [{"role": "user", '
            '"content": "' + "long " * 2000 + '"}], "messages": [{"role": "user", '
            '"content": "hi"}], "max_tokens": 5}')
    reply = httpx.post(governed.server.url + "/v1/chat/completions", content=body,
                       timeout=30, headers={"Authorization": f"Bearer {secret}",
                                            "Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text
    sent = emulator.last()["body"]
    assert "4000" not in sent and "long" not in sent
    assert orjson.loads(sent) == {"model": "gpt-4o", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("path", "body", "read"), [
    ("/v1/embeddings",
     '{"model": "text-embedding-3-small", "input": "' + "long " * 2000 + '", "input": "hi"}',
     {"model": "text-embedding-3-small", "input": "hi"}),
    ("/v1/completions",
     '{"model": "gpt-35-turbo-instruct", "max_tokens": 4000, "prompt": "hi", "max_tokens": 5}',
     {"model": "gpt-35-turbo-instruct", "max_tokens": 5, "prompt": "hi"}),
])
def test_every_governed_json_body_is_sent_as_its_limits_read_it(
        governed: Governed, emulator: Emulator, path: str, body: str,
        read: dict[str, Any]) -> None:
    """As for chat: a repeated `input` or `max_tokens` would let the key's reservation
    read the small one while Azure may read the other (before: sent as the client's
    bytes, both values in them)."""
    _, secret = governed.key("a")
    reply = httpx.post(governed.server.url + path, content=body, timeout=30,
                       headers={"Authorization": f"Bearer {secret}",
                                "Content-Type": "application/json"})
    assert reply.status_code == 200, reply.text
    sent = emulator.last()["body"]
    assert "4000" not in sent and "long" not in sent
    assert orjson.loads(sent) == read


def test_a_reference_spelled_in_other_letters_never_reaches_azure(
        governed: Governed, emulator: Emulator) -> None:
    """A frontend that binds JSON case-insensitively (ASP.NET Core's web defaults) would
    read `Previous_Response_Id` as `previous_response_id`: a body naming an object so,
    or an item reference so, is refused with a 400 before Azure sees it."""
    _, a_secret = governed.key("a")
    _, b_secret = governed.key("b", models=("gpt-4o",))  # restricted
    a = governed.client(a_secret)
    created = a.responses.create(model="gpt-4o", input="hi")
    response_id, item_id = created.id, created.output[0].id
    assert item_id
    headers = {"Authorization": f"Bearer {b_secret}", "Content-Type": "application/json"}
    seen = len(emulator.requests())
    reference = {"type": "item_reference", "id": item_id}
    for body in (
        {"model": "gpt-4o", "input": "more", "Previous_Response_Id": response_id},
        {"model": "gpt-4o", "input": "more", "PREVIOUS_RESPONSE_ID": response_id},
        {"model": "gpt-4o", "input": "more", "prev\u0131ous_response_id": response_id},
        {"model": "gpt-4o", "Input": [reference]},
        {"model": "gpt-4o", "input": [{"type": "item_reference", "ID": item_id}]},
        {"model": "gpt-4o", "input": [{"Type": "item_reference", "id": item_id}]},
        {"model": "gpt-4o", "input": [{"type": "Item_Reference", "id": item_id}]},
        {"model": "gpt-4o", "input": "more", "conversation": {"Id": response_id}},
        {"model": "gpt-4o", "input": [{"role": "user", "content": [
            {"type": "input_file", "File_Id": "file-x"}]}]},
    ):
        reply = httpx.post(governed.server.url + "/v1/responses", headers=headers,
                           json=body, timeout=30)
        assert reply.status_code == 400, (body, reply.text)
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error", body
        assert b_secret not in reply.text
    reply = httpx.post(governed.server.url + "/v1/batches", headers=headers, timeout=30,
                       json={"Input_File_Id": "file-x", "endpoint": "/v1/chat/completions",
                             "completion_window": "24h"})
    assert reply.status_code == 400, reply.text
    assert len(emulator.requests()) == seen  # none of them reached Azure
    # The exact spelling is checked as before: a's response is not b's.
    with pytest.raises(openai.NotFoundError):
        governed.client(b_secret).responses.create(model="gpt-4o", input="more",
                                                   previous_response_id=response_id)
    assert a.responses.create(model="gpt-4o", input="more",
                              previous_response_id=response_id).id


def test_a_chat_file_part_spelled_in_other_letters_never_reaches_azure(
        governed: Governed, emulator: Emulator) -> None:
    """Chat's file parts (`messages[].content[].file.file_id`) and the `messages` that
    hold them: another spelling of any of these names is a 400, Azure sees none."""
    _, b_secret = governed.key("b", models=("gpt-4o",))  # restricted
    headers = {"Authorization": f"Bearer {b_secret}", "Content-Type": "application/json"}
    seen = len(emulator.requests())
    hidden = [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-x"}}]}]
    for body in (
        {"model": "gpt-4o", "messages": hidden, "Messages": HELLO},
        {"model": "gpt-4o", "messages": [{"role": "user", "Content": hidden[0]["content"]}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "file", "File": {"file_id": "file-x"}}]}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "FILE", "FILE": {"FILE_ID": "file-x"}}]}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "file", "file": {"File_Id": "file-x"}}]}]},
    ):
        reply = httpx.post(governed.server.url + "/v1/chat/completions", headers=headers,
                           json=body, timeout=30)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["error"]["type"] == "invalid_request_error", body
    assert len(emulator.requests()) == seen  # none of them reached Azure
    # Other capitalised names are Azure's to judge, as before (the emulator refuses it).
    httpx.post(governed.server.url + "/v1/chat/completions", headers=headers,
               json={"model": "gpt-4o", "messages": HELLO, "User": "u"}, timeout=30)
    assert len(emulator.requests()) == seen + 1

"""A streamed picture edit left before its end is estimated (session 20's review of the
streamed pictures): its input pictures' image tokens are in the estimate, as in the
budget's hold (they were left out: a budget's spend fell ~47x short of an edit of large
high-fidelity pictures), and a form the gateway cannot read is estimated as the most it
could ask (it was one picture). The official `openai` SDK, or raw multipart bytes,
through the gateway to the emulator's gpt-image-1, whose events come a second apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.emulator import media
from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.e2e.test_s19_picture_streams import (  # noqa: F401
    _IMAGE,
    _OUT,
    _TEXT,
    _gateway,
    _picture_records,
    slow_picturing_emulator,
)
from tests.support import ServerThread
from tests.waiting import until


def _spent(gateway: ServerThread, key_id: str) -> float:
    app = gateway.app
    assert isinstance(app, GatewayApp) and app.ledger is not None
    spent: float = app.ledger.guard.spent(("key", key_id), "daily")
    return spent


def _keyless(gateway: ServerThread) -> list[UsageRecord]:
    return [r for r in records(gateway) if r.key_id is None and r.route == "images/edits"]


# Past the gateway's 1 MiB in memory, so that its form is spooled to a file (read, for the
# estimate, after the client has left): a PNG's bytes after its end are not read.
_SIZEABLE = media.png(1024, 1536, (9, 9, 9)) + bytes(1_200_000)


def test_a_left_streamed_edit_s_estimate_holds_its_input_pictures(
    slow_picturing_emulator: Emulator,  # noqa: F811
    ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = _gateway(slow_picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "in", budget_usd=5.0,
                                  budget_period="daily")
    stream = sdk(gateway, secret).images.edit(
        model="gpt-image-1", prompt="add a hat", stream=True, partial_images=2,
        quality="low", size="1024x1024", input_fidelity="high",
        image=("cat.png", _SIZEABLE, "image/png"))
    assert next(iter(stream)).type == "image_edit.partial_image"
    stream.close()
    until(lambda: _picture_records(gateway, key_id), 10, "the left stream was not recorded")
    [record] = _picture_records(gateway, key_id)
    assert record.usage_source == "estimated"
    # 1024x1536 scaled to 512x768: two tiles (65 + 2 x 129), and high fidelity's 6,144
    pictures = 65 + 2 * 129 + 6_144
    assert record.prompt_tokens == 3 + pictures  # "add a hat": 3 tokens; on main 3
    assert record.completion_tokens == 272 + 2 * 100
    cost = (3 * _TEXT + pictures * _IMAGE + (272 + 200) * _OUT) / 1e6
    assert record.cost_usd == pytest.approx(cost)  # on main ~$0.019, the input's ~$0.065 out
    assert _spent(gateway, key_id) == pytest.approx(cost)


def _form(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    out = b""
    for name, value in parts:
        file = b'; filename="cat.png"\r\nContent-Type: image/png' if name == "image" else b""
        out += (b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="'
                + name.encode() + b'"' + file + b"\r\n\r\n" + value + b"\r\n")
    return out + b"--" + boundary.encode() + b"--\r\n"


# `n` given twice: Azure binds one of them (the emulator the first), the gateway refuses
# to guess which (`RequestBody.held_fields`: a 400 where it holds a budget).
_TWICE = _form("b0undary", ("model", b"gpt-image-1"), ("prompt", b"add a hat"), ("n", b"1"), ("n", b"10"),
               ("stream", b"true"), ("partial_images", b"1"), ("quality", b"low"),
               ("size", b"1024x1024"), ("image", media.png(64, 64, (9, 9, 9))))
_FORM_TYPE = "multipart/form-data; boundary=b0undary"


def test_a_left_streamed_edit_whose_form_cannot_be_read_is_estimated_as_its_most(
    slow_picturing_emulator: Emulator,  # noqa: F811
    ledger_gateway: Callable[..., ServerThread],  # noqa: F811
) -> None:
    """A static client key (no hold: its form is not read before it goes out): 10
    pictures of the dearest quality and size, with 3 partial pictures each, the input
    pictures its bytes could carry, of the dearest size at high fidelity, and a prompt
    as long as its bytes; on main, one picture (6,240 tokens) and no input."""
    gateway = _gateway(slow_picturing_emulator, ledger_gateway)
    with httpx.stream("POST", gateway.url + "/v1/images/edits", content=_TWICE, timeout=10,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}",
                               "Content-Type": _FORM_TYPE}) as answer:
        assert answer.status_code == 200
        assert b"image_edit.partial_image" in next(answer.iter_bytes())
    until(lambda: _keyless(gateway), 10, "the left stream was not recorded")
    [record] = _keyless(gateway)
    assert record.usage_source == "estimated"
    assert record.completion_tokens == 10 * 6_240 + 10 * 3 * 100
    # as many picture parts as its bytes could carry (64 bytes each at least; at most 16)
    carried = len(_TWICE) // 64
    assert carried == 12
    text, pictures = -(-len(_TWICE) // 4), carried * (65 + 4 * 129 + 6_144)
    assert record.prompt_tokens == text + pictures
    assert record.cost_usd == pytest.approx(
        (text * _TEXT + pictures * _IMAGE + record.completion_tokens * _OUT) / 1e6)


def test_a_budget_never_sends_an_edit_whose_form_it_cannot_read(
    slow_picturing_emulator: Emulator,  # noqa: F811
    ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    """The hold's side (a guard: passes on main too): a key with a budget close to its
    limit is refused such a form with a 400 before Azure, so no hold of one picture lets
    ten through."""
    gateway = _gateway(slow_picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "near", budget_usd=0.02,
                                  budget_period="daily")
    answer = httpx.post(gateway.url + "/v1/images/edits", content=_TWICE, timeout=10,
                        headers={"Authorization": f"Bearer {secret}",
                                 "Content-Type": _FORM_TYPE})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "n"
    assert not slow_picturing_emulator.requests()  # never sent
    assert _spent(gateway, key_id) == 0.0

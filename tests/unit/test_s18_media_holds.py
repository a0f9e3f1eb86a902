"""A budget's hold for a form's files (issue 13, budgets; session 18): a transcription
was held at about $0 (whisper: nothing, its minutes known only after; the token-priced
models: the form's few text tokens), so twenty one-hour transcriptions all passed a
$0.05 budget at once; an edit's input pictures and a streamed picture's partial images
were not held at all. Now the audio's length is read from the first bytes of the
spooled file (gateway/formmedia.py `HeldForm`, governance/mediasize.py) and priced, and
so are the pictures' sizes; the form goes out as it came."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import MalformedBody
from azure_openai_proxy.gateway.budgethold import reserve_budget
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from tests.support import silent_wav
from tests.unit.test_spool import BOUNDARY, collect, form, spool


def _caller(budget: float | None = 0.05) -> Caller:
    return Caller(None, VirtualKey("k1", "k", "hash", "sk-aop-abc",
                                   limits=Limits(budget_usd=budget, budget_period="daily")))


def _guard() -> BudgetGuard:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    return guard


def _flac_hour() -> bytes:
    """A FLAC file of an hour, its frames left out (any FLAC is held a day: its frames
    may state their own sample rate)."""
    packed = (16_000 << 44) | (15 << 36) | (16_000 * 3600)
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes((0x80, 0, 0, 34)) + info + bytes(2000)


async def _form(*parts: tuple[str, bytes, str | None]) -> RequestBody:
    return RequestBody(spool=await spool(form(*parts)), boundary=BOUNDARY)


async def _transcription(model: str, audio: bytes, response_format: str | None = None,
                         name: str = "file") -> RequestBody:
    fields: list[tuple[str, bytes, str | None]] = [("model", model.encode(), None)]
    if response_format is not None:
        fields.append(("response_format", response_format.encode(), None))
    return await _form(*fields, (name, audio, "a.audio"))


def _hold(body: dict[str, Any] | None, model: str, operation: str,
          guard: BudgetGuard | None = None, caller: Caller | None = None) -> BudgetHold:
    held = reserve_budget(guard or _guard(), caller or _caller(10.0), body, (model,) * 3,
                          operation, 1024)
    assert isinstance(held, BudgetHold)
    return held


async def test_a_spooled_files_length_is_read_from_its_first_bytes() -> None:
    # 60 s at 8 kHz, 16-bit: 960 KB, and a second part past 1 MB: spooled to a file
    body = await _transcription("whisper", silent_wav(60), "verbose_json")
    fields = body.held_fields("audio/transcriptions")
    assert isinstance(fields, HeldForm)
    assert fields.audio_seconds() == 60.0
    big = await _transcription("whisper", silent_wav(90))
    assert big.spool is not None and big.spool._file is not None  # on disk
    held = big.held_fields("audio/transcriptions")
    assert isinstance(held, HeldForm) and held.audio_seconds() == 90.0
    # an MP3 behind a cover picture longer than the first bytes read: a second read
    tag_size = 100_000
    tag = b"ID3\x04\x00\x00" + bytes((tag_size >> 21 & 0x7F, tag_size >> 14 & 0x7F,
                                      tag_size >> 7 & 0x7F, tag_size & 0x7F)) + bytes(tag_size)
    frame = bytes((0xFF, 0xFB, 0x90, 0xC0)) + bytes(413)  # MPEG-1 L3 128 kbit/s
    mp3 = await _transcription("whisper", tag + frame * 2_400)
    held = mp3.held_fields("audio/transcriptions")
    assert isinstance(held, HeldForm)  # the tag and the frames at 7.96 kbit/s
    assert held.audio_seconds() == pytest.approx((len(tag) + 2_400 * 417) * 8 / 7_962)
    for each in (body, big, mp3):
        each.close()


async def test_a_whisper_transcription_holds_its_minutes() -> None:
    body = await _transcription("whisper", silent_wav(60), "verbose_json")
    fields = body.held_fields("audio/transcriptions")
    assert _hold(fields, "whisper", "audio/transcriptions").usd == pytest.approx(0.006)
    body.close()


async def test_a_token_priced_transcription_holds_its_audio_and_transcript_tokens() -> None:
    body = await _transcription("gpt-4o-transcribe", silent_wav(60))
    fields = body.held_fields("audio/transcriptions")
    held = _hold(fields, "gpt-4o-transcribe", "audio/transcriptions")
    # 1,000 audio tokens a minute at $6 / 1M, and 6 transcript tokens a second at $10
    assert held.usd == pytest.approx((1000 * 6.00 + 360 * 10.00) / 1e6)
    mini = _hold(fields, "gpt-4o-mini-transcribe", "audio/transcriptions")
    assert mini.usd == pytest.approx((1000 * 3.00 + 360 * 5.00) / 1e6)
    body.close()


async def test_concurrent_hour_long_transcriptions_do_not_all_pass_a_small_budget() -> None:
    for model, response_format in (("whisper", "verbose_json"), ("gpt-4o-transcribe", None)):
        guard, caller = _guard(), _caller(0.05)
        body = await _transcription(model, _flac_hour(), response_format)
        fields = body.held_fields("audio/transcriptions")
        holds = []
        for _ in range(20):
            try:
                holds.append(reserve_budget(guard, caller, fields, (model,) * 3,
                                            "audio/transcriptions", 1024))
            except Exception as exc:
                assert getattr(exc, "code", None) == "insufficient_quota"
        # the first is let through (its hold the whole budget), never twenty together
        assert len(holds) == 1, model
        assert isinstance(holds[0], BudgetHold) and holds[0].usd == pytest.approx(0.05)
        body.close()


def _png(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
            + struct.pack(">II", width, height) + bytes((8, 2, 0, 0, 0)) + bytes(4000))


async def _edit(*extra: tuple[str, bytes, str | None]) -> dict[str, Any]:
    body = await _form(("model", b"gpt-image-1", None), ("prompt", b"a hat", None),
                       ("quality", b"low", None), ("size", b"1024x1024", None), *extra)
    fields = body.held_fields("images/edits")
    assert isinstance(fields, HeldForm)
    return fields


async def test_an_edits_input_pictures_are_held_at_their_image_tokens() -> None:
    base = _hold(await _edit(), "gpt-image-1", "images/edits").usd
    # a 1024x1024 picture: scaled to 512x512, one tile: 65 + 129 tokens at $10 / 1M
    one = _hold(await _edit(("image", _png(1024, 1024), "a.png")), "gpt-image-1",
                "images/edits").usd
    assert one - base == pytest.approx(194 * 10 / 1e6)
    # 1536x1024 (two tiles) and a 4096x1024 strip (512x2048 after scaling: four), as
    # `image[]`
    two = _hold(await _edit(("image[]", _png(1536, 1024), "a.png"),
                            ("image[]", _png(4096, 1024), "b.png")),
                "gpt-image-1", "images/edits").usd
    assert two - base == pytest.approx((65 + 2 * 129 + 65 + 4 * 129) * 10 / 1e6)
    # a picture whose size cannot be read: the dearest the rule prices (four tiles)
    unread = _hold(await _edit(("image", b"not a picture" * 100, "a.png")), "gpt-image-1",
                   "images/edits").usd
    assert unread - base == pytest.approx((65 + 4 * 129) * 10 / 1e6)
    # high input fidelity adds 6,144 tokens a picture (4,096 for a square one: held high)
    high = _hold(await _edit(("input_fidelity", b"high", None),
                             ("image", _png(1024, 1024), "a.png")), "gpt-image-1",
                 "images/edits").usd
    assert high - base == pytest.approx((194 + 6144) * 10 / 1e6)


async def test_partial_images_are_held_as_output_tokens() -> None:
    base = _hold(await _edit(), "gpt-image-1", "images/edits").usd
    partial = _hold(await _edit(("partial_images", b"2", None)), "gpt-image-1",
                    "images/edits").usd
    assert partial - base == pytest.approx(200 * 40 / 1e6)
    generation = {"model": "gpt-image-1", "prompt": "a", "quality": "low",
                  "size": "1024x1024"}
    plain = _hold(generation, "gpt-image-1", "images/generations").usd
    # (asked with `stream`: metered, normalize/picture_meter.py)
    streamed = _hold({**generation, "partial_images": 3}, "gpt-image-1",
                     "images/generations").usd
    assert streamed - plain == pytest.approx(300 * 40 / 1e6)
    odd = _hold({**generation, "partial_images": "x"}, "gpt-image-1",
                "images/generations").usd  # not a count: the most
    assert odd - plain == pytest.approx(300 * 40 / 1e6)


@pytest.mark.parametrize("name", ["Partial_Images", "INPUT_FIDELITY"])
async def test_a_field_that_prices_an_edit_must_be_spelled_once_as_read(name: str) -> None:
    body = await _form(("model", b"gpt-image-1", None), (name, b"3", None),
                       ("image", _png(8, 8), "a.png"))
    with pytest.raises(MalformedBody, match=name.lower()):
        body.held_fields("images/edits")
    body.close()


async def test_the_form_goes_out_as_it_came_and_a_key_without_a_budget_reads_nothing() -> None:
    data = form(("model", b"whisper", None), ("response_format", b"verbose_json", None),
                ("file", silent_wav(60), "a.wav"))
    body = RequestBody(spool=await spool(data), boundary=BOUNDARY)
    fields = body.held_fields("audio/transcriptions")
    assert isinstance(fields, HeldForm)
    _hold(fields, "whisper", "audio/transcriptions")
    assert body.spool is not None and await collect(body.spool) == data

    class Counted(HeldForm):
        reads = 0

        def audio_seconds(self) -> float | None:
            Counted.reads += 1
            return super().audio_seconds()

    assert body.spool is not None
    counted = Counted(dict(fields), body.spool, BOUNDARY)
    no_budget = Caller(None, VirtualKey("k2", "k", "hash", "sk-aop-abd", limits=Limits()))
    assert reserve_budget(_guard(), no_budget, counted, ("whisper",) * 3,
                          "audio/transcriptions", 1024) is None
    assert Counted.reads == 0
    _hold(counted, "whisper", "audio/transcriptions")
    assert Counted.reads == 1
    body.close()


async def test_file_parts_are_found_by_the_name_a_lenient_reader_binds() -> None:
    # `File` and an unquoted `file` are bound by Azure's reader as `file`; a text part
    # named file is not a file
    wav = silent_wav(2)
    head = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            b"whisper\r\n--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"'
            b"\r\n\r\nnot a file\r\n--" + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="File"; filename="a.wav"\r\n\r\n'
            + silent_wav(1) + b"\r\n--" + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name=file; filename="b.wav"\r\n\r\n' + wav)
    body = await spool(head + b"\r\n--" + BOUNDARY + b"--\r\n")
    parts = body.file_parts(BOUNDARY, frozenset({"file"}), 5)
    assert len(parts) == 2 and parts[1][1] == len(head)
    assert body.read_at(parts[1][0], parts[1][1]) == wav
    held = HeldForm({}, body, BOUNDARY)
    assert held.audio_seconds() == 2.0  # the longer of the two
    body.close()


async def test_a_short_mp3_behind_a_short_tag_is_read_from_one_window() -> None:
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x20" + bytes(32)
    frame = bytes((0xFF, 0xFB, 0x90, 0xC0)) + bytes(413)
    body = await _transcription("whisper", tag + frame * 10)
    held = body.held_fields("audio/transcriptions")
    assert isinstance(held, HeldForm)
    assert held.audio_seconds() == pytest.approx((len(tag) + 10 * 417) * 8 / 7_962)
    body.close()


async def test_an_mp3_behind_a_short_tag_is_read_from_the_first_window() -> None:
    # a long file: the few hundred bytes of tag leave enough of the first window
    tag = b"ID3\x03\x00\x00\x00\x00\x02\x00" + bytes(256)
    frame = bytes((0xFF, 0xFB, 0x90, 0xC0)) + bytes(413)
    body = await _transcription("whisper", tag + frame * 3_000)
    held = body.held_fields("audio/transcriptions")
    assert isinstance(held, HeldForm) and body.spool is not None
    reads: list[tuple[int, int]] = []
    read_at = body.spool.read_at
    body.spool.read_at = lambda start, end: reads.append((start, end)) or read_at(start, end)  # type: ignore[method-assign]
    assert held.audio_seconds() == pytest.approx((len(tag) + 3_000 * 417) * 8 / 7_962)
    assert len(reads) == 1
    body.close()

"""Review of 239deb0..37efce8 (session 21): each test here fails on main and names the
defect it proves. Real bytes, no mocks."""

from __future__ import annotations

from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.estimate import unanswered_usage

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes and 1152 samples a frame
_FRAME = b"\xff\xfb\x90\x00" + bytes(413)
_FRAME_SECONDS = 1152 / 44_100


def _xing_frame(frames: int) -> bytes:
    """The first frame of a VBR-tagged MP3: a Xing header (flags: frame count) after the
    side info (32 bytes, MPEG-1 stereo), stating `frames`."""
    body = bytes(32) + b"Xing" + (1).to_bytes(4, "big") + frames.to_bytes(4, "big")
    return b"\xff\xfb\x90\x00" + body + bytes(413 - len(body))


def _transcription(audio: bytes) -> RequestBody:
    raw = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
           b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
           b"Content-Type: audio/mpeg\r\n\r\n" + audio + b"\r\n--b--\r\n")
    return RequestBody(spool=SpooledBody(raw, None, len(raw)), boundary=b"b")


def test_an_unanswered_transcription_is_not_recorded_at_a_lying_xing_count() -> None:
    # 24,000 real frames (~10 minutes of 128 kbit/s audio: ffmpeg decodes, and Azure
    # transcribes and bills, every one of them) whose Xing header claims 1 frame.
    frames = 24_000
    audio = _xing_frame(1) + _FRAME * (frames - 1)
    plays = frames * _FRAME_SECONDS  # ~627 s
    read = read_form(_transcription(audio), "audio/transcriptions")
    usage = unanswered_usage(read.fields, "audio/transcriptions", False,
                             audio_seconds=read.audio_seconds)
    assert usage is not None
    # 37efce8: ~8.7 s (the file's size at 9.2 Mbit/s), 1/72 of what Azure bills; the record
    # and the budget's spend (settle_budget prices this usage) both take it. Now never
    # under the size at 448 kbit/s, past every MPEG audio frame's bitrate: the most a
    # lying header takes off a 128 kbit/s file is 128/448 of it (a stated length is a
    # best estimate for an honest file: see test_s20_audio_length)
    fastest = len(audio) * 8 / 448_000
    assert usage["audio_seconds"] == fastest
    # (417-byte frames, unpadded: 127.7 kbit/s)
    assert plays * 127.7 / 448 <= usage["audio_seconds"] < plays


def test_a_webm_without_a_duration_states_no_length() -> None:
    # A browser's MediaRecorder writes WebM live: no Duration in its Info. The search
    # for Duration's ID (0x4489) runs over every byte of the head, Opus packets too, so
    # audio bytes that happen to read 44 89 84 are taken for a Duration: here 3 ms.
    import struct

    from azure_openai_proxy.governance.mediasize import audio_length, audio_seconds

    ebml = b"\x1a\x45\xdf\xa3\x84" + b"\x42\x82\x81w"  # EBML (DocType elided)
    info = b"\x15\x49\xa9\x66\x87" + b"\x2a\xd7\xb1\x83\x0f\x42\x40"  # TimecodeScale only
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"  # size unknown: live
    packet = bytes(40) + b"\x44\x89\x84" + struct.pack(">f", 3.0) + bytes(40)
    cluster = (b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff" + b"\xe7\x81\x00"
               + b"\xa3" + bytes([0x80 | (len(packet) + 4)]) + b"\x81\x00\x00\x80" + packet)
    head = ebml + segment + info + cluster
    size = 10_000_000  # ~40 minutes of 32 kbit/s Opus
    assert audio_seconds(head, size) > 40 * 60
    # main: 8.68 s (the size floor), recorded for an unanswered transcription
    assert audio_length(head, size) is None


def test_env_mode_holds_the_image_tool_as_its_ledger_prices_it() -> None:
    """Env mode (AZURE_OPENAI_ENDPOINT: a model not configured is the deployment of its
    name there): the allow-list judges the header's deployment by its name and the
    ledger prices its pictures by its name (image_gen_cost), but the hold finds no
    configured model and refuses every hard budget 403 model_not_priced."""
    from azure_openai_proxy.config import load_settings
    from azure_openai_proxy.gateway.governed import check_image_allowed
    from azure_openai_proxy.gateway.ledger import deployment_models
    from azure_openai_proxy.gateway.toolhold import image_tool_usd
    from azure_openai_proxy.governance.budget import BudgetGuard
    from azure_openai_proxy.governance.prices import PriceTable
    from azure_openai_proxy.governance.toolusage import image_gen_cost
    from azure_openai_proxy.routing import RoutingTable

    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                    "AZURE_OPENAI_API_KEY": "k"})
    table = RoutingTable(settings)
    pool = table.resolve("gpt-4o")
    assert pool.dynamic
    body = {"model": "gpt-4o", "input": "draw",
            "tools": [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]}
    headers = {"x-ms-oai-image-generation-deployment": "gpt-image-1"}
    check_image_allowed(("gpt-4o", "gpt-image-1"), table, pool, body, headers)  # allowed
    guard = BudgetGuard.__new__(BudgetGuard)
    guard.prices, guard.models = PriceTable.shipped(), deployment_models(settings)
    usage = {"input_tokens": 0, "output_tokens": 272, "deployment": "gpt-image-1"}
    ledger = image_gen_cost(guard.prices, guard.models, "https://r.example", usage)
    assert ledger[1] and ledger[0] > 0, ledger  # the ledger prices it, by its name
    # main: ModelNotPriced (403) for a deployment the ledger prices
    assert image_tool_usd(guard, body, headers, 0, pool, True) >= ledger[0]


def test_an_mp3s_id3_tag_is_not_counted_as_audio_in_its_stated_length() -> None:
    # 30 s of CBR 128 kbit/s MP3 (no Xing/Info frame) behind a 300 KB ID3v2 tag (a cover
    # picture): HeldForm reads the frames past the tag, but audio_length is given the
    # part's whole size, so the tag's bytes are priced as audio at the frame's bitrate.
    frames = round(30 / _FRAME_SECONDS)
    tag_body = 300_000
    syncsafe = bytes([(tag_body >> 21) & 0x7F, (tag_body >> 14) & 0x7F,
                      (tag_body >> 7) & 0x7F, tag_body & 0x7F])
    audio = b"ID3\x03\x00\x00" + syncsafe + bytes(tag_body) + _FRAME * frames
    read = read_form(_transcription(audio), "audio/transcriptions")
    assert read.audio_seconds is not None
    # main: 48.8 s (the tag's 300 KB at 128 kbit/s added to 30 s)
    assert read.audio_seconds < 30 * 1.05, read.audio_seconds

"""Handlers for audio (transcription, translation, speech) and images."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import image_stream, media, speech_stream, transcripts, wire_errors
from azure_openai_proxy.emulator.exchange import Exchange
from azure_openai_proxy.emulator.frames import prompt_results, safe_results
from azure_openai_proxy.emulator.generation import check_prompt_filter
from azure_openai_proxy.emulator.multipart import Part, field
from azure_openai_proxy.emulator.textgen import count_tokens
from azure_openai_proxy.emulator.validation import invalid_value

SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
     "verse"}
)


async def transcriptions(ex: Exchange) -> web.StreamResponse:
    return await _audio_text(ex, task="transcribe")


async def translations(ex: Exchange) -> web.StreamResponse:
    return await _audio_text(ex, task="translate")


async def _audio_text(ex: Exchange, *, task: str) -> web.StreamResponse:
    files = ex.form.get("file")
    if not files:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'file'.", "file", "missing_required_parameter"
        )
    fmt = field(ex.form, "response_format") or "json"
    if fmt not in transcripts.FORMATS:
        raise wire_errors.invalid_request(
            f"Invalid value: '{fmt}'. Supported values are: "
            + ", ".join(f"'{f}'" for f in transcripts.FORMATS) + ".",
            "response_format", "invalid_value",
        )
    language = "english" if task == "translate" else (field(ex.form, "language") or "english")
    granularities = [p.text for p in ex.form.get("timestamp_granularities[]", [])]
    transcript = transcripts.transcribe(files[0].data, field(ex.form, "prompt") or "")
    content_type, body = transcripts.render(
        transcript, fmt, task=task, language=language, word_timestamps="word" in granularities
    )
    await ex.think(0)
    if isinstance(body, dict):
        return ex.json(body)
    return ex.raw(body, content_type)


async def speech(ex: Exchange) -> web.StreamResponse:
    text = ex.body.get("input")
    if not isinstance(text, str) or not text:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    voice = ex.body.get("voice")
    if not isinstance(voice, str) or voice not in _VOICES:  # a list: unhashable, a 500
        raise wire_errors.invalid_request(
            f"Invalid value: '{voice}'. Supported values are: "
            + ", ".join(f"'{v}'" for v in sorted(_VOICES)) + ".", "voice", "invalid_value",
        )
    fmt = ex.body.get("response_format", "mp3")
    if not isinstance(fmt, str) or fmt not in media.CONTENT_TYPES:
        raise wire_errors.invalid_request(
            f"Invalid value: '{fmt}'. Supported values are: "
            + ", ".join(f"'{f}'" for f in media.CONTENT_TYPES) + ".",
            "response_format", "invalid_value",
        )
    speed = ex.body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
        raise wire_errors.invalid_request(
            "Invalid 'speed': expected a number between 0.25 and 4.", "speed", "invalid_value"
        )
    stream_format = ex.body.get("stream_format", "audio")
    if stream_format not in speech_stream.FORMATS:
        raise invalid_value("stream_format", stream_format, speech_stream.FORMATS)
    check_prompt_filter(text)
    audio = media.speech(fmt, text, float(speed))
    model = ex.deployment.model if ex.deployment is not None else ""
    if speech_stream.streams(model, stream_format):
        instructions = ex.body.get("instructions")
        usage = speech_stream.speech_usage(
            text, instructions if isinstance(instructions, str) else "", float(speed))
        return await ex.stream(speech_stream.events(audio, usage))
    await ex.think(0)
    return ex.raw(audio, media.CONTENT_TYPES[fmt])


def image_size(value: object) -> tuple[int, int]:
    size = "1024x1024" if value == "auto" else str(value)
    if size not in SIZES:
        raise wire_errors.invalid_request(
            f"Invalid value: '{value}'. Supported values are: "
            + ", ".join(f"'{s}'" for s in SIZES) + ".", "size", "invalid_value",
        )
    width, _, height = size.partition("x")
    return int(width), int(height)


# gpt-image-1's output tokens a picture, by quality and size (OpenAI's image generation
# guide); `auto` (or none) answered as high, a size it does not list as 1024x1024.
_PICTURE_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}


def _input_picture_tokens(part: Part, fidelity: object) -> int:
    """gpt-image-1's image tokens for an edit's input picture (OpenAI's vision guide):
    fit in 2048x2048, shortest side down to 512, 65 + 129 a 512-pixel tile; high input
    fidelity adds 4,096 (square) or 6,144. A picture that is not a PNG: as 1024x1024."""
    width, height = media.png_size(part.data) or (1024, 1024)
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    if min(width, height) > 512:
        scale = 512 / min(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    tokens = 65 + 129 * (-(-width // 512)) * (-(-height // 512))
    if fidelity == "high":
        tokens += 4096 if width == height else 6144
    return tokens


def _picture_usage(prompt: str, params: dict[str, Any], count: int,
                   pictures: list[Part]) -> dict[str, Any]:
    """A gpt-image-1 answer's usage: the prompt's text and the input pictures' image
    tokens in, the pictures' tokens out."""
    by_size = _PICTURE_TOKENS.get(str(params.get("quality")), _PICTURE_TOKENS["high"])
    out = by_size.get(str(params.get("size")), by_size["1024x1024"]) * count
    text = count_tokens(prompt)
    image = sum(_input_picture_tokens(part, params.get("input_fidelity")) for part in pictures)
    return {"input_tokens": text + image,
            "input_tokens_details": {"text_tokens": text, "image_tokens": image},
            "output_tokens": out, "total_tokens": text + image + out}


def _count_and_size(ex: Exchange, params: dict[str, Any]) -> tuple[int, int, int]:
    """The pictures asked for and their width and height, or Azure's 400."""
    count = params.get("n", 1)
    if isinstance(count, str) and count.isascii() and count.isdigit():  # not "²"
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10:
        raise wire_errors.invalid_request("Invalid 'n': expected 1 to 10.", "n", "invalid_value")
    assert ex.deployment is not None
    if ex.deployment.model.startswith("dall-e-3") and count != 1:
        raise wire_errors.invalid_request("You must provide n=1 for this model.", "n")
    width, height = image_size(params.get("size") or "1024x1024")
    return count, width, height


def _picture(prompt: str, index: int, width: int, height: int) -> bytes:
    digest = hashlib.sha256(f"{prompt}\x1f{index}".encode()).digest()
    return media.png(width, height, (digest[0], digest[1], digest[2]))


def _images_body(ex: Exchange, prompt: str, params: dict[str, Any], default_fmt: str,
                 pictures: list[Part] | None = None) -> Any:
    check_prompt_filter(prompt)
    count, width, height = _count_and_size(ex, params)
    assert ex.deployment is not None
    fmt = params.get("response_format") or default_fmt
    if fmt not in ("url", "b64_json"):
        raise wire_errors.invalid_request(
            f"Invalid value: '{fmt}'. Supported values are: 'url' and 'b64_json'.",
            "response_format", "invalid_value",
        )
    data = []
    for index in range(count):
        image = _picture(prompt, index, width, height)
        item: dict[str, Any] = {"revised_prompt": prompt,
                                "content_filter_results": safe_results(),
                                "prompt_filter_results": prompt_results()}
        if fmt == "b64_json":
            item["b64_json"] = base64.b64encode(image).decode("ascii")
        else:
            image_id = ex.state.keep_image(image)
            item["url"] = f"{ex.request.scheme}://{ex.request.host}/_emulator/images/{image_id}.png"
        data.append(item)
    if ex.deployment.model.startswith("gpt-image"):  # billed by tokens: it says them
        return {"created": ex.created, "data": data,
                "usage": _picture_usage(prompt, params, count, pictures or [])}
    return {"created": ex.created, "data": data}


async def image_generations(ex: Exchange) -> web.StreamResponse:
    prompt = ex.body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if image_stream.asked(ex.body.get("stream")):
        return await _streamed(ex, "image_generation", prompt, ex.body, [])
    body = _images_body(ex, prompt, ex.body, "url")
    await ex.think(0)
    return ex.json(body)


async def image_edits(ex: Exchange) -> web.StreamResponse:
    if not (ex.form.get("image") or ex.form.get("image[]")):
        raise wire_errors.invalid_request(
            "Missing required parameter: 'image'.", "image", "missing_required_parameter"
        )
    prompt = field(ex.form, "prompt")
    if not prompt:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    params = {name: parts[0].text for name, parts in ex.form.items()
              if name in ("n", "size", "response_format", "quality", "input_fidelity",
                          "stream", "partial_images", "background", "output_format")}
    pictures = [*ex.form.get("image", []), *ex.form.get("image[]", [])]
    if image_stream.asked(params.get("stream")):
        return await _streamed(ex, "image_edit", prompt, params, pictures)
    body = _images_body(ex, prompt, params, "b64_json", pictures)
    await ex.think(0)
    return ex.json(body)


async def _streamed(ex: Exchange, kind: str, prompt: str, params: dict[str, Any],
                    pictures: list[Part]) -> web.StreamResponse:
    """A gpt-image-1 picture asked with `stream` (emulator/image_stream.py): each
    picture's partial events and its completed event, with its own usage."""
    assert ex.deployment is not None
    partial = image_stream.partial_images(params, ex.deployment.model, ex.version)
    check_prompt_filter(prompt)
    count, width, height = _count_and_size(ex, params)
    first = _picture_usage(prompt, params, 1, pictures)
    extra = partial * image_stream.PARTIAL_IMAGE_TOKENS
    usages = []
    for index in range(count):
        details = first["input_tokens_details"]  # the prompt is read once: the first's
        text, image = (details["text_tokens"], details["image_tokens"]) if index == 0 else (0, 0)
        out = first["output_tokens"] + extra
        usages.append({"input_tokens": text + image,
                       "input_tokens_details": {"text_tokens": text, "image_tokens": image},
                       "output_tokens": out, "total_tokens": text + image + out})
    images = [_picture(prompt, index, width, height) for index in range(count)]
    return await ex.stream(image_stream.frames(kind, images, partial, usages, params,
                                               ex.created))

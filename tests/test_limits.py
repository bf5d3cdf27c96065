"""`[limits]` end to end, against a real server: every limit a request can pass, refused in each API style's own
error shape (never a 500), and a request at the limit served. Styles where a limit cannot be reached from the
request are left out: v2beta's steps and image count are the server's, ModelsLab takes no uploads.

- job limits (backends/limits.py, before a job queues): width × height × images, steps, batch size and
  batch × n_iter, prompt and negative prompt length;
- uploads (backends/images.py `open_image`): the file's bytes, its declared pixels (read from the header, so a
  PNG bomb is refused before it is decoded);
- the request body (webui/body_limit.py): over Content-Length, and counted while a chunked body streams.
"""

from __future__ import annotations

import base64
import io
import json
import os

import httpx
import pytest
from live import start_live_server
from PIL import Image

from backends.config import Limits

LIMITS = Limits(max_steps=10, max_batch_size=3, max_images=4, max_pixels=256 * 256, max_prompt_length=100,
                max_upload_bytes=60_000, max_image_pixels=256 * 256, max_body_bytes=400_000)
RAW = {
    "keys": {"modelslab": ["ml-limits-key"]},
    "modelslab": {"sync_wait": 60},
    "stability_v2": {"steps": 1, "turbo_steps": 1, "size_scale": 0.25, "sampler": "Euler", "schedule": None},
}
ML_KEY = "ml-limits-key"
BETA = "stable-diffusion-xl-beta-v2-2-2"  # v1 engine taking 128..896 sides (one of them at most 512)
V1_HEADERS = {"Authorization": "Bearer any-key-from-loopback", "Accept": "application/json"}
V2_JSON = {"accept": "application/json"}
LONG = "x" * (LIMITS.max_prompt_length + 1)
AT_LIMIT = "y" * LIMITS.max_prompt_length


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_live_server(tmp_path_factory.mktemp("limits"), raw=RAW, limits=LIMITS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=300) as client:
        yield client


# ------------------------------------------------------------------------------------------ the styles


def a1111(c: httpx.Client, path: str = "txt2img", **fields) -> httpx.Response:
    body = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 1, **fields}
    return c.post(f"/sdapi/v1/{path}", json=body)


def v1(c: httpx.Client, negative: str = "", **fields) -> httpx.Response:
    prompts = [{"text": fields.pop("prompt", "a cat")}] + ([{"text": negative, "weight": -1}] if negative else [])
    body = {"text_prompts": prompts, "width": 128, "height": 128, "steps": 10, "seed": 1, **fields}
    return c.post(f"/v1/generation/{BETA}/text-to-image", json=body, headers=V1_HEADERS)


def v2(c: httpx.Client, endpoint: str = "ultra", files: dict | None = None, **fields) -> httpx.Response:
    parts = [(k, (None, str(v))) for k, v in {"prompt": "a cat", "seed": 1, **fields}.items()]
    return c.post(f"/v2beta/stable-image/generate/{endpoint}", files=parts + list((files or {}).items()),
                  headers=V2_JSON)


def modelslab(c: httpx.Client, **fields) -> httpx.Response:
    body = {"key": ML_KEY, "model_id": "sd15", "prompt": "a cat", "width": 256, "height": 256,
            "num_inference_steps": 2, "seed": 1, **fields}
    return c.post("/api/v6/images/text2img", json=body)


def openai(c: httpx.Client, **fields) -> httpx.Response:
    body = {"prompt": "a cat", "size": "64x64", "response_format": "b64_json", "steps": 2, "seed": 1, **fields}
    return c.post("/v1/images/generations", json=body)


def a1111_error(r: httpx.Response) -> str:
    data = r.json()
    assert set(data) == {"error", "detail", "body", "errors"}, data
    return data["detail"]


def v1_error(r: httpx.Response) -> str:
    data = r.json()
    assert set(data) == {"id", "name", "message"} and data["id"], data
    return data["message"]


def v2_error(r: httpx.Response) -> str:
    data = r.json()
    assert set(data) == {"id", "name", "errors"} and data["errors"], data
    assert r.headers["x-request-id"] == data["id"]
    return "; ".join(data["errors"])


def modelslab_error(r: httpx.Response) -> str:
    data = r.json()
    assert data["status"] == "error" and data["message"] == data["messege"], data
    return data["message"]


def openai_error(r: httpx.Response) -> str:
    data = r.json()
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}, data
    assert data["error"]["type"] == "invalid_request_error", data
    return data["error"]["message"]


ERRORS = {"a1111": a1111_error, "v1": v1_error, "v2": v2_error, "modelslab": modelslab_error,
          "openai": openai_error}
SEND = {"a1111": a1111, "v1": v1, "v2": v2, "modelslab": modelslab, "openai": openai}


def refused(r: httpx.Response, style: str, *mentions: str, status: int = 400) -> str:
    """The style's own error shape with `status`, JSON, never a traceback; the message names the problem."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert "Traceback" not in r.text
    message = ERRORS[style](r)
    for text in mentions:
        assert text in message, message
    return message


def served(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------ job limits

PIXELS = "width × height × images must be at most 65536 pixels"
STEPS = "steps must be between 1 and 10"


@pytest.mark.parametrize("style, fields, mention", [
    # width × height × images
    ("a1111", {"width": 256, "height": 256, "n_iter": 2}, PIXELS),
    ("v1", {"width": 512, "height": 512}, PIXELS),
    ("v2", {"endpoint": "core"}, PIXELS),  # core is 1.5 MP: 304×304 at this size_scale
    ("modelslab", {"samples": 2}, PIXELS),
    ("openai", {"size": "256x256", "n": 2}, PIXELS),
    # steps
    ("a1111", {"steps": 11}, STEPS),
    ("v1", {"steps": 11}, STEPS),
    ("modelslab", {"num_inference_steps": 11}, STEPS),
    ("openai", {"steps": 11}, STEPS),
    # batch size, and batch × n_iter
    ("a1111", {"batch_size": 4}, "batch_size must be between 1 and 3"),
    ("a1111", {"batch_size": 2, "n_iter": 3}, "batch_size × n_iter must be between 1 and 4"),
    ("v1", {"samples": 4}, "batch_size must be between 1 and 3"),
    ("modelslab", {"samples": 4}, "batch_size must be between 1 and 3"),
    ("openai", {"n": 4}, "batch_size must be between 1 and 3"),
    # prompt and negative prompt
    ("a1111", {"prompt": LONG}, "prompt must be at most 100 characters (got 101)"),
    ("a1111", {"negative_prompt": LONG}, "negative_prompt must be at most 100 characters"),
    ("v1", {"prompt": LONG}, "prompt must be at most 100 characters"),
    ("v1", {"negative": LONG}, "negative_prompt must be at most 100 characters"),
    ("v2", {"prompt": LONG}, "prompt must be at most 100 characters"),
    ("v2", {"negative_prompt": LONG}, "negative_prompt must be at most 100 characters"),
    ("modelslab", {"prompt": LONG}, "prompt must be at most 100 characters"),
    ("modelslab", {"negative_prompt": LONG}, "negative_prompt must be at most 100 characters"),
    ("openai", {"prompt": LONG}, "prompt must be at most 100 characters"),
    ("openai", {"negative_prompt": LONG}, "negative_prompt must be at most 100 characters"),
])
def test_a_job_over_a_limit_is_refused_in_the_style_shape(http, style, fields, mention):
    refused(SEND[style](http, **fields), style, mention)


@pytest.mark.parametrize("style, fields", [
    # 128×128 × 4 images = max_pixels, batch 2 ≤ 3, 4 images = max_images, steps = max_steps
    ("a1111", {"width": 128, "height": 128, "batch_size": 2, "n_iter": 2, "steps": 10, "prompt": AT_LIMIT,
               "negative_prompt": AT_LIMIT}),
    ("v1", {"samples": 3, "steps": 10, "prompt": AT_LIMIT, "negative": AT_LIMIT}),  # batch = max_batch_size
    ("v2", {"endpoint": "ultra", "prompt": AT_LIMIT, "negative_prompt": AT_LIMIT}),  # 256×256 = max_pixels
    ("modelslab", {"num_inference_steps": 10, "prompt": AT_LIMIT, "negative_prompt": AT_LIMIT}),  # = max_pixels
    ("openai", {"size": "128x128", "n": 3, "steps": 10, "prompt": AT_LIMIT, "negative_prompt": AT_LIMIT}),
])
def test_a_job_at_the_limits_is_served(http, style, fields):
    served(SEND[style](http, **fields))


# ------------------------------------------------------------------------------------------ uploads


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise(side: int) -> bytes:
    """A PNG that barely compresses: ~3 bytes a pixel."""
    return png(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)))


SMALL_UPLOAD = noise(128)  # ~49 KB, 16384 pixels: under both upload limits
TOO_MANY_BYTES = noise(160)  # ~77 KB: over max_upload_bytes
TOO_MANY_PIXELS = png(Image.new("1", (300, 300)))  # a few hundred bytes declaring 90000 pixels
assert len(SMALL_UPLOAD) < LIMITS.max_upload_bytes < len(TOO_MANY_BYTES)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A PNG bomb: 48 KB of file declaring 20000×20000 pixels (400 M: past even Pillow's own bomb guard)."""
    data = png(Image.new("1", (20000, 20000)))
    assert len(data) < LIMITS.max_upload_bytes
    return data


@pytest.fixture(scope="module")
def quiet_bomb() -> bytes:
    """12000×12000 (144 M pixels): Pillow only warns, so our own check refuses it before it is decoded."""
    return png(Image.new("1", (12000, 12000)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def upload(c: httpx.Client, style: str, data: bytes) -> httpx.Response:
    """Each style's image-to-image with `data` as the uploaded image."""
    if style == "a1111":
        return a1111(c, "img2img", init_images=[b64(data)], denoising_strength=0.5, width=128, height=128)
    if style == "v1":
        form = {"text_prompts[0][text]": "a cat", "steps": "10", "seed": "5", "image_strength": "0.5"}
        return c.post(f"/v1/generation/{BETA}/image-to-image", data=form,
                      files={"init_image": ("init.png", data, "image/png")}, headers=V1_HEADERS)
    if style == "v2":
        return v2(c, "sd3", mode="image-to-image", strength=0.5, files={"image": ("in.png", data, "image/png")})
    assert style == "openai"
    return c.post("/v1/images/edits", data={"prompt": "a cat", "size": "128x128", "response_format": "b64_json",
                                            "steps": "2", "seed": "1"},
                  files={"image": ("in.png", data, "image/png")})


UPLOAD_STYLES = ["a1111", "v1", "v2", "openai"]


@pytest.mark.parametrize("style", UPLOAD_STYLES)
def test_an_upload_under_the_limits_is_served(http, style):
    served(upload(http, style, SMALL_UPLOAD))


@pytest.mark.parametrize("style", UPLOAD_STYLES)
def test_an_upload_over_max_upload_bytes_is_refused(http, style):
    refused(upload(http, style, TOO_MANY_BYTES), style, f"the most is {LIMITS.max_upload_bytes}")


@pytest.mark.parametrize("style", UPLOAD_STYLES)
def test_an_upload_over_max_image_pixels_is_refused(http, style):
    refused(upload(http, style, TOO_MANY_PIXELS), style, "300x300", "the most is 65536 pixels")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 144 M one: Pillow only warns
@pytest.mark.parametrize("style", UPLOAD_STYLES)
def test_a_png_bomb_is_refused_before_it_is_decoded(http, style, bomb, quiet_bomb):
    refused(upload(http, style, bomb), style, "pixels")
    refused(upload(http, style, quiet_bomb), style, "12000x12000")


def test_a1111_extras_png_info_and_mask_hold_uploads_to_the_limits(http, bomb):
    r = http.post("/sdapi/v1/png-info", json={"image": b64(bomb)})
    refused(r, "a1111", "image:")
    r = http.post("/sdapi/v1/extra-single-image", json={"image": b64(TOO_MANY_BYTES), "upscaler_1": "Lanczos"})
    refused(r, "a1111", "image:", "bytes")
    r = a1111(http, "img2img", init_images=[b64(SMALL_UPLOAD)], mask=b64(TOO_MANY_PIXELS), width=128, height=128)
    refused(r, "a1111", "mask:", "300x300")


# ------------------------------------------------------------------------------------------ request body

BIG = LIMITS.max_body_bytes + 1000

BODY_PATHS = [
    ("a1111", "/sdapi/v1/txt2img", "application/json"),
    ("v1", f"/v1/generation/{BETA}/text-to-image", "application/json"),
    ("v2", "/v2beta/stable-image/generate/core", "multipart/form-data; boundary=x"),
    ("modelslab", "/api/v6/images/text2img", "application/json"),
    ("openai", "/v1/images/generations", "application/json"),
]


def big_json() -> bytes:
    return json.dumps({"prompt": "a cat", "padding": "p" * BIG}).encode()


def chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("style, path, content_type", BODY_PATHS)
def test_a_body_over_the_limit_by_content_length_is_413(http, style, path, content_type):
    headers = {"content-type": content_type, **(V1_HEADERS if style == "v1" else {})}
    r = http.post(path, content=big_json(), headers=headers)
    refused(r, style, str(LIMITS.max_body_bytes), status=413)


@pytest.mark.parametrize("style, path, content_type", BODY_PATHS)
def test_a_chunked_body_over_the_limit_is_413(http, style, path, content_type):
    headers = {"content-type": content_type, **(V1_HEADERS if style == "v1" else {})}
    r = http.post(path, content=chunks(big_json()), headers=headers)
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    refused(r, style, str(LIMITS.max_body_bytes), status=413)


def test_a_body_over_the_limit_elsewhere_is_a_plain_413(http):
    r = http.post("/no/such/api", content=big_json(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text


def test_a_chunked_body_under_the_limit_is_served(http):
    body = json.dumps({"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 1,
                       "padding": "p" * (LIMITS.max_body_bytes - 1000)}).encode()
    assert len(body) < LIMITS.max_body_bytes
    r = http.post("/sdapi/v1/txt2img", content=chunks(body), headers={"content-type": "application/json"})
    served(r)

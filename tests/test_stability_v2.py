"""Stability v2beta Stable Image end to end (docs/reference/hosted_apis.md §B.6, item by item): real servers on
127.0.0.1 (uvicorn in a thread, the demo tiny SDXL), driven with httpx multipart exactly as the official samples
send it.

Server A runs with `size_scale = 0.25` (ratios kept, 1/16 of the pixels) and 1 step so most items cost well under
a second; server B runs the documented sizes, with API keys and a small rate budget, for the megapixel, 401 and
429 items."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from PIL import Image

from backends.dialects import stability_v2 as d
from backends.job import Job
from backends.remote.client import RETRY_STATUSES
from backends.remote.errors import UpstreamError
from backends.upstream import UpstreamAnswer
from live import start_live_server

GEN = "/v2beta/stable-image/generate"
IMAGE_ACCEPT = {"accept": "image/*"}
JSON_ACCEPT = {"accept": "application/json"}


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    raw = {"stability_v2": {"steps": 1, "turbo_steps": 1, "size_scale": 0.25, "sampler": "Euler", "schedule": None,
                            "blocked_terms": ["forbiddenword"], "english_only": True}}
    srv = start_live_server(tmp_path_factory.mktemp("v2a"), raw=raw)
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        yield client
    srv.stop()


KEY, RATE_KEY = "sk-test-main", "sk-test-rate"
RATE_LIMIT = 5


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Documented sizes, keys configured, a rate budget of RATE_LIMIT requests per 10 s per key."""
    raw = {"keys": {"stability": [KEY, RATE_KEY]},
           "stability_v2": {"steps": 1, "turbo_steps": 1, "sampler": "Euler", "schedule": None,
                            "rate_limit": RATE_LIMIT, "rate_window_s": 10, "rate_timeout_s": 60}}
    srv = start_live_server(tmp_path_factory.mktemp("v2b"), raw=raw)
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        yield client
    srv.stop()


def post(client, endpoint: str, fields: dict | None = None, *, files: dict | None = None, headers=None,
         prefix: str = GEN) -> httpx.Response:
    """Real multipart: text fields as (None, value) parts, plus any files."""
    parts = [(k, (None, str(v))) for k, v in (fields or {}).items()]
    parts += list((files or {}).items())
    if not parts:
        parts = [("none", ("none", b""))]
    return client.post(f"{prefix}/{endpoint}", files=parts, headers=headers or IMAGE_ACCEPT)


def ok_image(r: httpx.Response) -> Image.Image:
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(r.content))
    image.load()
    return image


def assert_error(r: httpx.Response, status: int, name: str, mentions: str | None = None) -> dict:
    """Item 18: every error is application/json with exactly id, name, errors (a non-empty list of strings)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/json"
    body = r.json()
    assert set(body) == {"id", "name", "errors"}, body
    assert body["name"] == name, body
    assert isinstance(body["id"], str) and re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert r.headers["x-request-id"] == body["id"]
    assert isinstance(body["errors"], list) and body["errors"] and all(isinstance(e, str) for e in body["errors"])
    assert "message" not in body
    if mentions:
        assert any(mentions in e for e in body["errors"]), body
    return body


def png_bytes(size=(96, 64), color=(200, 30, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def ratio_close(image: Image.Image, aspect: str) -> bool:
    a, b = (int(x) for x in aspect.split(":"))
    return abs(image.width / image.height / (a / b) - 1) <= 0.03


# ------------------------------------------------------------------------------------------- items 1-3


def test_1_core_image_bytes_with_headers(http):
    r = post(http, "core", {"prompt": "a cat"})
    image = ok_image(r)
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.headers["finish-reason"] == "SUCCESS"
    assert re.fullmatch(r"[0-9]+", r.headers["seed"]) and int(r.headers["seed"]) > 0
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert image.size == d.output_size("core", "1:1", "sdxl", 0.25) == (304, 304)
    assert "a cat" in image.info["parameters"]  # the parameters travel inside the PNG


def test_2_json_answer(http):
    r = post(http, "core", {"prompt": "a cat", "seed": 11}, headers=JSON_ACCEPT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json; type=image/png"
    body = r.json()
    assert set(body) == {"image", "finish_reason", "seed"}
    assert body["finish_reason"] == "SUCCESS" and body["seed"] == 11 and isinstance(body["seed"], int)
    assert base64.b64decode(body["image"])[:4] == b"\x89PNG"
    assert "finish-reason" not in r.headers and "seed" not in r.headers and "x-request-id" in r.headers


@pytest.mark.parametrize("fmt, mime, magic", [("jpeg", "image/jpeg", b"\xff\xd8"), ("webp", "image/webp", b"RIFF")])
def test_3_output_formats(http, fmt, mime, magic):
    r = post(http, "core", {"prompt": "a cat", "seed": 3, "output_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == mime and r.content.startswith(magic)
    if fmt == "webp":
        assert r.content[8:12] == b"WEBP"


def test_accept_missing_gives_image(http):
    parts = [("prompt", (None, "a cat")), ("seed", (None, "5"))]
    r = http.post(f"{GEN}/core", files=parts, headers={"accept": ""})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


# ------------------------------------------------------------------------------------------- items 4-5, 7, 9


def test_4_missing_prompt(http):
    assert_error(post(http, "core", {"seed": 1}), 400, "bad_request", mentions="prompt")
    assert_error(post(http, "ultra", {"prompt": ""}), 400, "bad_request", mentions="prompt")


@pytest.mark.parametrize("endpoint, fields, mentions", [
    ("core", {"aspect_ratio": "4:3"}, "aspect_ratio"),
    ("core", {"output_format": "gif"}, "output_format"),
    ("core", {"style_preset": "foo"}, "style_preset"),
    ("core", {"seed": 4294967295}, "seed"),
    ("core", {"seed": -1}, "seed"),
    ("core", {"seed": "abc"}, "seed"),
    ("core", {"negative_prompt": "x" * 10001}, "negative_prompt"),
    ("sd3", {"model": "sd3.5-foo"}, "model"),
    ("sd3", {"cfg_scale": 11}, "cfg_scale"),
    ("sd3", {"cfg_scale": 0.5}, "cfg_scale"),
    ("sd3", {"mode": "inpaint"}, "mode"),
    ("ultra", {"strength": 1.5, "image": "x"}, "strength"),
])
def test_5_7_13_invalid_fields(http, endpoint, fields, mentions):
    assert_error(post(http, endpoint, {"prompt": "a cat", **fields}), 400, "bad_request", mentions=mentions)


def test_7_seed_zero_draws_a_nonzero_seed(http):
    r = post(http, "ultra", {"prompt": "a cat", "seed": 0}, headers=JSON_ACCEPT)
    assert r.status_code == 200, r.text
    assert 0 < r.json()["seed"] <= d.MAX_SEED


def test_9_prompt_length(http):
    assert_error(post(http, "core", {"prompt": "a" * 10001}), 400, "bad_request", mentions="prompt")
    ok_image(post(http, "core", {"prompt": "cat " * 2500, "seed": 9}))


# ------------------------------------------------------------------------------------------- items 6, 8


def test_6_aspect_ratios_scaled(http):
    for endpoint in ("core", "ultra"):
        image = ok_image(post(http, endpoint, {"prompt": "a cat", "aspect_ratio": "16:9", "seed": 1}))
        assert ratio_close(image, "16:9"), image.size
    image = ok_image(post(http, "sd3", {"prompt": "a cat", "aspect_ratio": "9:21", "seed": 1}))
    assert ratio_close(image, "9:21"), image.size


def test_8_same_seed_same_bytes_and_parameters_matter(http):
    fields = {"prompt": "a lighthouse", "seed": 7}
    first = post(http, "core", fields)
    second = post(http, "core", fields)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and first.headers["seed"] == "7"
    other_seed = post(http, "core", {**fields, "seed": 8})
    styled = post(http, "core", {**fields, "style_preset": "pixel-art"})
    negative = post(http, "core", {**fields, "negative_prompt": "blurry, fog"})
    for r in (other_seed, styled, negative):
        assert r.status_code == 200 and r.content != first.content
    # the preset's template from styles.json went into the prompt
    assert ok_image(styled).info["parameters"].startswith("pixel art of a lighthouse")


# ------------------------------------------------------------------------------------------- item 11


@pytest.mark.parametrize("endpoint", ["ultra", "sd3", "core"])
def test_11_body_over_10_mib(http, endpoint):
    big = b"\0" * (10 * 1024 * 1024 + 1)
    r = post(http, endpoint, {"prompt": "a cat"}, files={"image": ("big.png", big, "image/png")})
    assert_error(r, 413, "payload_too_large", mentions="10MiB")


# ------------------------------------------------------------------------------------------- items 12-13


def test_12_sd3_image_to_image(http):
    assert_error(post(http, "sd3", {"prompt": "a cat", "mode": "image-to-image"}), 400, "bad_request",
                 mentions="image")
    assert_error(post(http, "sd3", {"prompt": "a cat", "mode": "image-to-image"},
                      files={"image": ("in.png", png_bytes(), "image/png")}), 400, "bad_request", mentions="strength")
    r = post(http, "sd3", {"prompt": "a cat", "mode": "image-to-image", "strength": 0.5, "seed": 2},
             files={"image": ("in.png", png_bytes((96, 64)), "image/png")})
    image = ok_image(r)
    assert ratio_close(image, "3:2"), image.size  # the output follows the input's shape
    assert "Denoising strength: 0.5" in image.info["parameters"]
    assert_error(post(http, "sd3", {"prompt": "a cat", "mode": "image-to-image", "strength": 0.5},
                      files={"image": ("in.png", png_bytes((32, 32)), "image/png")}), 400, "bad_request",
                 mentions="image")
    assert_error(post(http, "sd3", {"prompt": "a cat", "mode": "image-to-image", "strength": 0.5},
                      files={"image": ("in.png", b"not an image", "image/png")}), 400, "bad_request",
                 mentions="image")


def test_12_ultra_image_needs_strength(http):
    files = {"image": ("in.jpg", png_bytes((64, 96), fmt="JPEG"), "image/jpeg")}
    assert_error(post(http, "ultra", {"prompt": "a cat"}, files=files), 400, "bad_request", mentions="strength")
    image = ok_image(post(http, "ultra", {"prompt": "a cat", "strength": 0.6, "seed": 4}, files=files))
    assert ratio_close(image, "2:3"), image.size


def test_13_sd3_models_and_cfg(http):
    legacy = ok_image(post(http, "sd3", {"prompt": "a cat", "model": "sd3-large", "seed": 5}))
    assert "CFG scale: 4.0" in legacy.info["parameters"]  # sd3.5-large's default
    turbo = ok_image(post(http, "sd3", {"prompt": "a cat", "model": "sd3.5-large-turbo", "cfg_scale": 1, "seed": 5}))
    assert "CFG scale: 1.0" in turbo.info["parameters"]
    assert legacy.size == turbo.size == d.output_size("sd3", "1:1", "sdxl", 0.25)


# ------------------------------------------------------------------------------------------- items 14-16


def test_14_15_empty_none_part_and_unknown_fields(http):
    parts = [("prompt", (None, "a cat")), ("seed", (None, "6")), ("none", ("none", b"")),
             ("unknown_field", (None, "whatever")), ("steps", (None, "500")), ("extra_file", ("x.bin", b"\1\2"))]
    r = http.post(f"{GEN}/core", files=parts, headers=IMAGE_ACCEPT)
    assert ok_image(r) and r.headers["seed"] == "6"


def test_16_moderation_and_language(http):
    assert_error(post(http, "core", {"prompt": "a ForbiddenWord cat"}), 403, "content_moderation")
    assert_error(post(http, "ultra", {"prompt": "一只猫"}), 422, "invalid_language", mentions="English")


# Item 16's CONTENT_FILTERED output (the safety checker): tests/test_feature_safety.py, on a server with a tiny checker.


# ------------------------------------------------------------------------------------------- transport


def test_json_and_urlencoded_bodies_are_refused(http):
    r = http.post(f"{GEN}/core", json={"prompt": "a cat"}, headers=IMAGE_ACCEPT)
    assert_error(r, 400, "bad_request", mentions="multipart/form-data")
    r = http.post(f"{GEN}/core", data={"prompt": "a cat"}, headers=IMAGE_ACCEPT)
    assert_error(r, 400, "bad_request", mentions="multipart/form-data")
    r = http.post(f"{GEN}/core", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and set(r.json()) == {"id", "name", "errors"}


def test_unknown_endpoint_wrong_method_and_client_headers(http):
    assert_error(post(http, "flux", {"prompt": "a cat"}), 404, "not_found")
    assert_error(http.get(f"{GEN}/core"), 405, "method_not_allowed")
    r = http.post(f"{GEN}/core", content=b"x", headers={"content-type": "multipart/form-data"})  # no boundary
    assert_error(r, 400, "bad_request")
    r = post(http, "core", {"prompt": "a cat"}, headers={"stability-client-id": "x" * 257})
    assert_error(r, 400, "bad_request", mentions="stability-client-id")


def test_gateway_prefix(http):
    r = post(http, "core", {"prompt": "a cat", "seed": 7}, prefix="/sd" + GEN)
    direct = post(http, "core", {"prompt": "a cat", "seed": 7})
    assert ok_image(r) and r.content == direct.content


def test_openapi_documents_multipart(http):
    spec = http.get("/openapi.json").json()
    body = spec["paths"][f"{GEN}/sd3"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"prompt", "model", "mode", "image", "strength", "cfg_scale"} <= set(body["properties"])


# ------------------------------------------------------------------------------------------- the reverse pair


def test_relay_pair_against_this_server(http):
    """job → v2beta request → this server → Result: what the relay will do against a real gateway."""
    job = Job(prompt="a red fox", width=1024, height=1024, seed=21, model="ultra", batch_size=2)
    plan = d.plan_upstream(job, accept="application/json")
    assert plan.context.endpoint == "ultra" and len(plan.requests) == 2
    answers = []
    for req in plan.requests:
        r = http.request(req.method, req.path, files=req.files, headers=req.headers)
        answers.append(UpstreamAnswer(r.status_code, dict(r.headers), r.content))
    result = d.answers_to_result(job, plan, answers)
    assert result.seeds == [21, 22] and len(result.images) == 2
    assert result.images[0].size == d.output_size("ultra", "1:1", "sdxl", 0.25)
    # the same request made directly gives the same image
    direct = ok_image(post(http, "ultra", {"prompt": "a red fox", "seed": 21}))
    assert direct.tobytes() == result.images[0].tobytes()

    # an error answer is the gateway client's to read (backends/remote/errors.py), before the reverse pair
    bad = d.plan_upstream(Job(prompt="", model="core"))
    r = http.request("POST", bad.requests[0].path, files=bad.requests[0].files, headers=bad.requests[0].headers)
    err = UpstreamError.from_response("local", r.status_code, r.headers, r.content,
                                      retryable=r.status_code in RETRY_STATUSES)
    assert err.status == 400 and err.code == "bad_request" and "prompt" in err.message
    assert err.details["request_id"] == r.headers["x-request-id"] and not err.details["retryable"]


# ------------------------------------------------------------------------------------------- server B: sizes, keys


def test_6_documented_megapixels(full):
    auth = {"authorization": f"Bearer {KEY}", **IMAGE_ACCEPT}
    core = ok_image(post(full, "core", {"prompt": "a cat", "aspect_ratio": "16:9", "seed": 1}, headers=auth))
    assert ratio_close(core, "16:9") and abs(core.width * core.height / 1.5e6 - 1) <= 0.10, core.size
    # ultra shares sd3's 1 MP table (its ratios: test_6_aspect_ratios_scaled; its megapixels: the unit tests)
    sd3 = ok_image(post(full, "sd3", {"prompt": "a cat", "seed": 1}, headers=auth))
    assert sd3.size == (1024, 1024)


def test_10_authorization(full):
    assert_error(post(full, "core", {"prompt": "a cat"}), 401, "unauthorized", mentions="authorization")
    r = post(full, "core", {"prompt": "a cat"}, headers={"authorization": "Bearer sk-wrong"})
    body = assert_error(r, 401, "unauthorized")
    assert "sk-wrong" not in r.text and KEY not in r.text and body["errors"]


def test_17_rate_limit(full):
    headers = {"authorization": f"Bearer {RATE_KEY}"}
    for _ in range(RATE_LIMIT):  # invalid requests still count, as upstream counts calls
        assert_error(post(full, "core", {"seed": 1}, headers=headers), 400, "bad_request")
    assert_error(post(full, "core", {"prompt": "a cat"}, headers=headers), 429, "rate_limit_exceeded")
    # the caller stays timed out; another key is unaffected
    assert_error(post(full, "core", {"seed": 1}, headers=headers), 429, "rate_limit_exceeded")
    assert_error(post(full, "core", {"seed": 1}, headers={"authorization": f"Bearer {KEY}"}), 400, "bad_request")

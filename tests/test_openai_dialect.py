"""The OpenAI Images dialect's own rules, without a server: parsing and its error wording, sizes, masks, the
quality/style tables, the error shape and status codes, and the relay's reverse pair."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from backends.config import ConfigError, Limits
from backends.dialects import openai as oa
from backends.dialects.openai.errors import error_body
from backends.dialects.openai.plan import to_job
from backends.job import GenerationFailed, InvalidRequest, Job, ModelInfo, ModelNotFound, QueueFull
from backends.styles import DEFAULT_PATH, StyleStore
from backends.upstream import UpstreamAnswer

SD1 = ModelInfo(name="tiny-sd1", title="tiny-sd1 [abc]", source="x", kind="folder", family="sd1")
XL = ModelInfo(name="tiny-sdxl", title="tiny-sdxl", source="x", kind="folder", family="sdxl")
LIMITS = Limits()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def job_for(operation: str, body, model=SD1, settings=None, **kw) -> Job:
    req = oa.parse_request(operation, body)
    return to_job(operation, req, model, req.model, settings or oa.Settings(), StyleStore(DEFAULT_PATH), LIMITS,
                  "req_1", **kw)


def refused(operation: str, body) -> oa.OpenAIError:
    with pytest.raises(oa.OpenAIError) as caught:
        job_for(operation, body)
    return caught.value


# ------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("body, param, code", [
    (b"{}", "prompt", "missing_required_parameter"),
    (b'{"prompt": ""}', "prompt", "missing_required_parameter"),
    (b'{"prompt": "x", "n": 0}', "n", "integer_below_min_value"),
    (b'{"prompt": "x", "n": 11}', "n", "integer_above_max_value"),
    (b'{"prompt": "x", "quality": "ultra"}', "quality", "invalid_value"),
    (b'{"prompt": "x", "style": "loud"}', "style", "invalid_value"),
    (b'{"prompt": "x", "response_format": "png"}', "response_format", "invalid_value"),
    (b'{"prompt": "x", "output_format": "gif"}', "output_format", "invalid_value"),
    (b'{"prompt": "x", "stream": true}', "stream", "unsupported_value"),
    (json.dumps({"prompt": "x" * 32001}).encode(), "prompt", "string_above_max_length"),
    (b"not json", None, None),
])
def test_parse_refuses_in_openai_words(body, param, code):
    with pytest.raises(oa.OpenAIError) as caught:
        oa.parse_request("generations", body)
    assert caught.value.status == 400 and caught.value.param == param and caught.value.error_code == code


def test_form_fields_are_read_like_json_and_image_lists_join():
    req = oa.parse_request("edits", {"prompt": "x", "n": "2", "image[]": [b"a", b"b"], "image": b"c", "mask": b"",
                                     "size": ""})
    assert req.n == 2 and req.image == [b"c", b"a", b"b"] and req.mask is None and req.size is None
    with pytest.raises(oa.OpenAIError) as caught:
        oa.parse_request("variations", {"n": "1"})
    assert caught.value.param == "image"
    assert oa.parse_request("generations", b'{"prompt": "x", "user": "u1", "safety_identifier": "s1"}').owner == "s1"


# ------------------------------------------------------------------------------------------- sizes and jobs


@pytest.mark.parametrize("size, model, expected", [
    (None, SD1, (512, 512)), ("auto", XL, (1024, 1024)), ("1000x700", SD1, (1000, 704)), ("70x77", SD1, (72, 80)),
    ("1792x1024", XL, (1792, 1024)),
])
def test_sizes(size, model, expected):
    got = oa.pick_size(size, model, LIMITS)
    assert (got.width, got.height) == expected


@pytest.mark.parametrize("size", ["big", "0x512", "512x4096", "512", "-5x5"])
def test_bad_sizes_are_invalid_size(size):
    with pytest.raises(oa.OpenAIError) as caught:
        oa.pick_size(size, SD1, LIMITS)
    assert caught.value.param == "size" and caught.value.error_code == "invalid_size"


def test_generation_job_quality_style_seeds_and_owner():
    job = job_for("generations", b'{"prompt": "a cat", "n": 3, "seed": 10, "quality": "hd", "style": "vivid", '
                                 b'"size": "256x256", "negative_prompt": "dogs", "user": "alice"}')
    assert (job.width, job.height, job.batch_size, job.seed) == (256, 256, 3, 10)
    assert (job.steps, job.cfg_scale) == oa.QUALITY["hd"]
    assert job.prompt.startswith("breathtaking a cat") and "dogs" in job.negative_prompt
    assert job.owner == "openai-user:alice" and job.model == SD1.title
    assert job.extra["openai"]["revised_prompt"] == job.prompt
    drawn = job_for("generations", b'{"prompt": "x", "n": 2}')
    assert 0 <= drawn.seed <= oa.MAX_SEED - 1
    assert job_for("generations", b'{"prompt": "x", "steps": 7, "guidance_scale": 3}').steps == 7
    tuned = job_for("generations", b'{"prompt": "x", "quality": "low"}', settings=oa.Settings(quality={"low": 2}))
    assert tuned.steps == 2


def test_openai_mask_becomes_ours_and_back():
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (8, 8, 24, 24))
    ours = oa.repaint_mask(mask)
    assert ours.getpixel((16, 16)) == 255 and ours.getpixel((0, 0)) == 0
    job = job_for("edits", {"prompt": "x", "image": png(Image.new("RGB", (32, 32))), "mask": png(mask),
                            "size": "64x64"})
    assert job.mask.getpixel((16, 16)) == 255 and job.init_image.size == (32, 32) and job.width == 64
    back = Image.open(io.BytesIO(oa.openai_mask(job)))
    assert back.getpixel((16, 16))[3] == 0 and back.getpixel((0, 0))[3] == 255


def test_edit_rules():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 16))
    own = job_for("edits", {"prompt": "x", "image": png(rgba)})
    assert own.mask is not None and own.mask.getpixel((4, 4)) == 255 and (own.width, own.height) == (64, 64)
    assert job_for("edits", {"prompt": "x", "image": png(Image.new("RGB", (64, 64)))}).mask is None
    fidelity = job_for("edits", {"prompt": "x", "image": png(Image.new("RGB", (64, 64))), "input_fidelity": "high"})
    assert fidelity.denoising_strength == 0.5
    assert refused("edits", {"prompt": "x", "image": b"not an image"}).error_code == "invalid_image"
    bad_mask = refused("edits", {"prompt": "x", "image": png(Image.new("RGB", (64, 64))),
                                 "mask": png(Image.new("RGBA", (32, 32)))})
    assert bad_mask.param == "mask"
    variation = job_for("variations", {"image": png(Image.new("RGB", (64, 48)))})
    assert variation.prompt == "" and variation.init_image is not None
    assert (variation.width, variation.height) == (64, 48)


def test_strict_mode_enforces_the_per_model_rules():
    strict = oa.Settings(strict=True)
    for body, param in ((b'{"prompt": "x", "model": "dall-e-3", "size": "512x512"}', "size"),
                        (b'{"prompt": "x", "model": "dall-e-3", "n": 2}', "n"),
                        (json.dumps({"prompt": "x" * 1001, "model": "dall-e-2"}).encode(), "prompt")):
        with pytest.raises(oa.OpenAIError) as caught:
            job_for("generations", body, settings=strict)
        assert caught.value.param == param
    # lenient (the default): any size on any model
    assert job_for("generations", b'{"prompt": "x", "model": "dall-e-3", "size": "512x512", "n": 2}').width == 512


def test_settings_are_checked_at_startup():
    assert oa.Settings.from_config({"openai": {"url_expiry_s": "60"}}).url_expiry_s == 60.0
    for bad in ({"default_response_format": "png"}, {"quality": {"ultra": 3}}, {"sampler": "nope"}):
        with pytest.raises(ConfigError):
            oa.Settings.from_config({"openai": bad})


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("exc, status, kind, code", [
    (QueueFull("full"), 429, "requests", "rate_limit_exceeded"),
    (ModelNotFound("no model"), 404, "invalid_request_error", "model_not_found"),
    (InvalidRequest("bad", details={"field": "image"}), 400, "invalid_request_error", "invalid_value"),
    (GenerationFailed("boom"), 500, "server_error", None),
    (RuntimeError("secret detail"), 500, "server_error", None),
])
def test_error_shape_and_status(exc, status, kind, code):
    got, body, headers = error_body(exc)
    assert got == status and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == kind and body["error"]["code"] == code
    assert "secret" not in body["error"]["message"]
    if status == 429:
        assert 0 < int(headers["retry-after"]) <= 120
    if status >= 500:
        assert headers["x-should-retry"] == "false"  # the SDK would rerun a whole generation twice


# ------------------------------------------------------------------------------------------- the relay


def test_a_foreign_job_is_translated_with_what_openai_cannot_carry():
    job = Job(prompt="a castle", negative_prompt="fog", width=320, height=256, steps=30, seed=11, batch_size=12,
              sampler="DPM++ 2M", clip_skip=2)
    plan = oa.plan_upstream(job)
    assert [r.path for r in plan.requests] == ["/v1/images/generations"] * 2
    first, second = (r.json for r in plan.requests)
    assert (first["n"], first["seed"], second["n"], second["seed"]) == (10, 11, 2, 21)
    assert first["size"] == "320x256" and first["response_format"] == "b64_json" and "model" not in first
    assert {"negative_prompt", "steps", "sampler", "clip_skip"} <= set(plan.dropped)
    assert "seed" not in plan.dropped
    gpt = oa.plan_upstream(Job(prompt="x", model="gpt-image-1", seed=1))
    assert "response_format" not in gpt.requests[0].json and gpt.requests[0].json["model"] == "gpt-image-1"


def test_an_img2img_job_becomes_an_edit_with_openai_mask():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    job = Job(prompt="x", init_image=Image.new("RGB", (64, 64)), mask=mask, denoising_strength=0.4, seed=3)
    (request,) = oa.plan_upstream(job).requests
    assert request.path == "/v1/images/edits"
    names = [name for name, _ in request.files]
    assert "image" in names and "mask" in names and ("input_fidelity", (None, "high")) in request.files


def test_answers_become_a_result_with_seeds_from_the_infotext():
    from backends.images import encode_base64

    job = Job(prompt="x", seed=5, batch_size=2)
    plan = oa.plan_upstream(job)
    with_seed = encode_base64(Image.new("RGB", (8, 8)), "png", "x\nSteps: 2, Seed: 99, Size: 8x8")
    bare = encode_base64(Image.new("RGB", (8, 8)), "png")
    answer = UpstreamAnswer(200, {}, json.dumps({"created": 1, "data": [{"b64_json": with_seed},
                                                                        {"b64_json": bare}]}).encode())
    result = oa.answers_to_result(job, plan, [answer])
    assert result.seeds == [99, 6] and len(result.images) == 2
    with pytest.raises(GenerationFailed):
        oa.answers_to_result(job, plan, [UpstreamAnswer(200, {}, b'{"oops": 1}')])

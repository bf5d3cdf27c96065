"""The A1111 dialect without a server: request models, infotext both ways, styles, options, image helpers,
errors, and the image codec / outputs it relies on. Fast: no model, no engine."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from backends import outputs
from backends.config import REPO_ROOT
from backends.dialects import a1111 as d
from backends.images import decode_base64_image, encode_base64, encode_image, read_infotext
from backends.infotext import checkpoint_short_name, create_infotext, parse_generation_parameters
from backends.job import InvalidRequest, ModelInfo, ModelNotFound
from backends.styles import StyleStore

# ------------------------------------------------------------------------------------------ request models


def test_txt2img_defaults_are_a1111s():
    req = d.Txt2ImgRequest.model_validate({})
    assert req.steps == 50
    assert req.sampler_index == "Euler" and req.sampler_name is None and req.scheduler is None
    assert req.seed == -1 and req.subseed == -1
    assert req.cfg_scale == 7.0 and (req.width, req.height) == (512, 512)
    assert req.denoising_strength is None  # the base class default wins in A1111's generated model
    assert req.override_settings_restore_afterwards is True
    assert req.send_images is True and req.save_images is False
    assert req.script_args == [] and req.alwayson_scripts == {}
    assert d.Img2ImgRequest.model_validate({}).denoising_strength == 0.75


def test_unknown_keys_ignored_numbers_coerced_nulls_allowed():
    req = d.Txt2ImgRequest.model_validate(
        {"steps": "20", "cfg_scale": 7, "prompt": 12, "no_such_field": 1, "seed": "", "styles": None, "eta": None}
    )
    assert req.steps == 20 and req.cfg_scale == 7.0 and req.prompt == "12"
    assert req.seed == -1  # "" means random, as A1111's get_fixed_seed
    assert not hasattr(req, "no_such_field")
    assert d.Txt2ImgRequest.model_validate({k: None for k in d.Txt2ImgRequest.model_fields}).steps is None


@pytest.mark.parametrize("body", [{"steps": "many"}, {"prompt": ["a", "b"]}, {"width": "wide"}])
def test_invalid_values_fail_validation(body):
    with pytest.raises(ValidationError):
        d.Txt2ImgRequest.model_validate(body)


def test_echo_order_and_exclusions():
    order = d.ECHO_ORDER[d.Txt2ImgRequest]
    assert order[:4] == ["prompt", "negative_prompt", "styles", "seed"]
    assert order.index("enable_hr") > order.index("comments")
    assert order.index("sampler_index") > order.index("force_task_id")
    assert order[-1] == "model"
    dumped = d.Txt2ImgRequest.model_validate({"model": "x"}).model_dump()
    assert "model" not in dumped  # the gateway's field is honoured but never echoed
    assert "include_init_images" not in d.Img2ImgRequest.model_validate({}).model_dump()


# ---------------------------------------------------------------------------------------------- infotext


def test_infotext_matches_a1111_example():
    params = {
        "Steps": 20, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 7.0, "Seed": 1234,
        "Size": "512x512", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Version": "v1.10.1",
    }
    assert create_infotext("a cat", "", params) == (
        "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )


def test_infotext_key_order_quoting_and_negative():
    params = {
        "Version": "sdgate-1", "Lora hashes": "x: 1a2b", "Hires upscale": 2.0, "Clip skip": 2, "Seed": 7,
        "Steps": 4, "Sampler": "Euler", "RNG": "CPU", "Denoising strength": 0.5, "Face restoration": None,
    }
    text = create_infotext("p", "bad, ugly", params)
    assert text == (
        "p\nNegative prompt: bad, ugly\nSteps: 4, Sampler: Euler, Seed: 7, Denoising strength: 0.5, Clip skip: 2, "
        'RNG: CPU, Lora hashes: "x: 1a2b", Hires upscale: 2.0, Version: sdgate-1'
    )


def test_parse_generation_parameters_reverses_infotext():
    text = create_infotext(
        "a cat,\nin a hat", "ugly\nblurry",
        {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 42,
         "Size": "512x768", "Lora hashes": "a: 1, b: 2", "Version": "sdgate-0.1.0"},
    )
    res = parse_generation_parameters(text)
    assert res["Prompt"] == "a cat,\nin a hat" and res["Negative prompt"] == "ugly\nblurry"
    assert res["Steps"] == "20" and res["Sampler"] == "DPM++ 2M" and res["Schedule type"] == "Karras"
    assert res["Size-1"] == "512" and res["Size-2"] == "768" and res["Seed"] == "42"
    assert res["Lora hashes"] == "a: 1, b: 2" and res["Version"] == "sdgate-0.1.0"
    assert res["Clip skip"] == "1" and res["Hires resize-1"] == 0 and res["RNG"] == "GPU"  # A1111's defaults


def test_parse_legacy_sampler_name_and_prompt_only():
    res = parse_generation_parameters("x\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1")
    assert res["Sampler"] == "DPM++ 2M" and res["Schedule type"] == "Karras"
    only = parse_generation_parameters("just a prompt, with: a colon")
    assert only["Prompt"] == "just a prompt, with: a colon" and only["Schedule type"] == "Automatic"


def test_checkpoint_short_name():
    info = ModelInfo(name="sub_m", title="sub/m.safetensors [0123456789]", source="/x", kind="single_file",
                     hash="0123456789")
    assert checkpoint_short_name(info) == "m"
    assert checkpoint_short_name(ModelInfo(name="a_b-1.0", title="a/b-1.0", source="a/b-1.0", kind="repo")) == "b-1.0"


# ------------------------------------------------------------------------------------------------ styles


def test_styles_substitute_or_append(tmp_path):
    path = tmp_path / "styles.json"
    path.write_text(json.dumps([
        {"name": "wrap", "prompt": "art of {prompt}, vivid", "negative_prompt": "ugly"},
        {"name": "tail", "prompt": "sharp focus", "negative_prompt": "{prompt}, blurry"},
    ]))
    store = StyleStore(path)
    assert store.apply("a cat", "", ["wrap"]) == ("art of a cat, vivid", "ugly")
    assert store.apply("a cat", "bad", ["wrap", "tail", "missing"]) == (
        "art of a cat, vivid, sharp focus", "bad, ugly, blurry"
    )
    assert store.apply("", "", ["tail"]) == ("sharp focus", ", blurry")


def test_repo_styles_have_the_stability_presets():
    names = {s.name for s in StyleStore(REPO_ROOT / "styles.json").all()}
    presets = {"3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
               "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
               "pixel-art", "tile-texture"}
    assert presets <= names and len(names) > len(presets)


# ------------------------------------------------------------------------------------------------ options


def test_coerce_option():
    assert d.coerce_option("send_seed", "false", True) is False
    assert d.coerce_option("CLIP_stop_at_last_layers", "2", 1) == 2
    assert d.coerce_option("jpeg_quality", 90.0, 80) == 90
    for key, value, default in (("CLIP_stop_at_last_layers", "two", 1), ("send_seed", "maybe", True),
                                ("samples_format", "gif", "png"), ("emphasis", "Loud", "Original")):
        with pytest.raises(InvalidRequest):
            d.coerce_option(key, value, default)


def test_options_store_persists(tmp_path):
    path = tmp_path / "opts.json"
    store = d.OptionsStore(path, {"a": 1, "b": "x"})
    store.update({"a": 2})
    assert store.values() == {"a": 2, "b": "x"}
    again = d.OptionsStore(path, {"a": 1, "b": "x"})
    assert again.get("a") == 2 and again.saved("b") is None
    assert [p.name for p in tmp_path.iterdir()] == ["opts.json"]  # no temp file left behind


# ----------------------------------------------------------------------------------------- image helpers


def _gradient(w=64, h=32) -> Image.Image:
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 4 % 256, y * 8 % 256, 128) for y in range(h) for x in range(w)])
    return img


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_modes_give_the_asked_size(mode):
    assert d.resize_image(mode, _gradient(), 48, 48).size == (48, 48)


def test_fill_masked_keeps_unmasked_pixels():
    img = _gradient()
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).rectangle((16, 8, 40, 24), fill=255)
    filled = d.fill_masked(img, mask)
    assert filled.getpixel((2, 2)) == img.getpixel((2, 2))
    assert filled.getpixel((28, 16)) != (0, 0, 0)


def test_grid_layout():
    assert d.make_grid([_gradient(8, 8)] * 4).size == (16, 16)
    assert d.make_grid([_gradient(8, 8)] * 3).size == (24, 8)


# ------------------------------------------------------------------------------------------------- errors


def test_error_body_shapes():
    from fastapi import HTTPException

    status, body, headers = d.error_body(HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Basic"}))
    assert (status, body) == (401, {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""})
    assert headers == {"WWW-Authenticate": "Basic"}
    status, body, _ = d.error_body(ModelNotFound("model 'x' not found"))
    assert status == 404 and body["error"] == "ModelNotFound" and body["detail"] == "model 'x' not found"
    status, body, _ = d.error_body(ZeroDivisionError("division by zero"))
    assert status == 500
    assert body == {"error": "ZeroDivisionError", "detail": "", "body": "", "errors": "division by zero"}


# ------------------------------------------------------------------------------------------ codec, outputs


def test_decode_accepts_what_clients_send():
    raw = base64.b64encode(encode_image(_gradient(), "png")).decode()
    wrapped = "\n".join(raw[i : i + 60] for i in range(0, len(raw), 60))
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(raw)).decode()
    for text in (raw, "data:image/png;base64," + raw, raw.rstrip("="), wrapped, urlsafe):
        assert decode_base64_image(text).size == (64, 32)
    for bad in ("", "not base64!", base64.b64encode(b"not an image").decode(), "https://example.com/x.png"):
        with pytest.raises(InvalidRequest, match="init_images\\[0\\]"):
            decode_base64_image(bad, "init_images[0]")


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_infotext_survives_each_format(fmt):
    text = "a cat\nSteps: 20, Sampler: Euler, Seed: 1, Version: sdgate-0 — ünïcode"
    image = Image.open(io.BytesIO(base64.b64decode(encode_base64(_gradient(), fmt, text))))
    assert image.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    geninfo, items = read_infotext(image)
    assert geninfo == text
    assert "exif" not in items and "dpi" not in items


def test_save_image_numbers_and_names(tmp_path):
    first = outputs.save_image(_gradient(), tmp_path, "txt2img-images", 123, "x\nSteps: 1, Seed: 123, Size: 1x1")
    second = outputs.save_image(_gradient(), tmp_path, "txt2img-images", 124, None, "jpg")
    assert first.parent == second.parent and first.parent.parent.name == "txt2img-images"
    assert (first.name, second.name) == ("00000-123.png", "00001-124.jpg")
    assert Image.open(first).info["parameters"].startswith("x\n")
    assert sorted(p.name for p in first.parent.iterdir()) == ["00000-123.png", "00001-124.jpg"]


def test_validation_errors_have_fastapis_shape():
    from backends.dialects.a1111.errors import RequestInvalid

    with pytest.raises(ValidationError) as caught:
        d.Txt2ImgRequest.model_validate({"steps": "many"})
    status, body, _ = d.error_body(RequestInvalid.from_validation(caught.value))
    assert status == 422 and body["detail"][0]["loc"] == ("body", "steps")
    try:
        json.loads(b"{not json")
    except json.JSONDecodeError as e:
        status, body, _ = d.error_body(RequestInvalid.from_json(e))
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    assert RequestInvalid.from_validation(caught.value).message.startswith("steps: ")


# ------------------------------------------------------------------------------------------------- auth


def _config(api_auth=(), raw=None):
    from backends.config import Config

    return Config(api_auth=list(api_auth), raw=raw or {})


def _call(path: str, authorization: str | None = None, ui: bool = False):
    from backends.dialects.base import Call

    return Call(path=path, headers={"authorization": authorization} if authorization else {}, ui=ui)


def test_authorize_basic_and_gateway_bearer(monkeypatch):
    from backends.dialects.a1111.auth import authorize

    monkeypatch.delenv("SDGATE_GATEWAY_KEYS", raising=False)
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert authorize(_config(), _call("/sdapi/v1/options")) is None  # nothing configured: open, as A1111
    config = _config([("alice", "s3cret")], {"a1111": {"gateway_keys": ["key-one"]}})
    with pytest.raises(d.Unauthorized, match="Not authenticated") as caught:
        authorize(config, _call("/sdapi/v1/options"))
    assert d.error_body(caught.value) == (
        401, {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""},
        {"WWW-Authenticate": "Basic"})
    with pytest.raises(d.Unauthorized, match="Incorrect username or password"):
        authorize(config, _call("/sdapi/v1/options", "Basic " + base64.b64encode(b"alice:no").decode()))
    assert authorize(config, _call("/sdapi/v1/txt2img", basic)) == "alice"
    with pytest.raises(d.Unauthorized) as caught:
        authorize(config, _call("/v1/sdapi/v1/sd-models", basic))  # the gateway prefix takes its key
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}
    with pytest.raises(d.Unauthorized, match="Invalid API key"):
        authorize(config, _call("/v1/sdapi/v1/sd-models", "Bearer nope"))
    assert authorize(config, _call("/v1/sdapi/v1/sd-models", "Bearer key-one")) == "gateway key"
    assert authorize(_config([("alice", "s3cret")]), _call("/v1/sdapi/v1/sd-models", basic)) == "alice"
    assert authorize(config, _call("", ui=True)) is None  # the UI's own login let the person in


# ------------------------------------------------------------------------------------- infotext → fields


def test_fields_from_infotext_one_rule_for_requests_and_the_ui():
    text = create_infotext("a cat", "dog", {
        "Steps": 12, "Sampler": "Euler", "CFG scale": 5.0, "Seed": 9, "Size": "64x96", "Model hash": "0123456789",
        "Model": "m", "Denoising strength": 0.5, "Clip skip": 2, "Hires upscale": 2.0, "Hires upscaler": "Latent"})
    titles = {"0123456789": "m.safetensors [0123456789]"}

    def resolve(name):
        if name not in titles:
            raise ModelNotFound(name)
        return titles[name]

    data = d.fields_from_infotext(text, "txt2img", resolve)
    assert (data["prompt"], data["negative_prompt"], data["steps"], data["seed"]) == ("a cat", "dog", 12, 9)
    assert (data["width"], data["height"], data["cfg_scale"]) == (64, 96, 5.0)
    assert data["enable_hr"] is True and data["hr_scale"] == 2.0 and data["hr_upscaler"] == "Latent"
    assert data["model"] == "m.safetensors [0123456789]"
    assert data["override_settings"] == {"CLIP_stop_at_last_layers": "2", "emphasis": "Original"}  # png-info defaults
    img2img = d.fields_from_infotext(text, "img2img", resolve)
    assert "enable_hr" not in img2img and "hr_scale" not in img2img and img2img["denoising_strength"] == 0.5
    # hires keys without a denoising strength are not a hires infotext (A1111's paste rule)
    plain = d.fields_from_infotext("x\nSteps: 3, Hires upscale: 2, Seed: 1", "txt2img", resolve)
    assert plain["enable_hr"] is False and "model" not in plain


# ---------------------------------------------------------------------------------------- reverse pair


def test_reverse_pair_round_trip():
    from backends.job import Job, Lora
    from backends.upstream import UpstreamAnswer

    job = Job(prompt="p", seed=5, steps=3, sampler="DPM++ 2M Karras", model="m", clip_skip=2, batch_size=2,
              loras=[Lora("x", 0.5)], prompt_weighting=False)
    plan = d.to_upstream(job)
    (request,) = plan.requests
    assert (request.method, request.path) == ("POST", "/sdapi/v1/txt2img")
    assert request.json["prompt"] == "p <lora:x:0.5>" and request.json["sampler_name"] == "DPM++ 2M"
    assert request.json["scheduler"] == "Karras" and request.json["override_settings"] == {
        "sd_model_checkpoint": "m", "CLIP_stop_at_last_layers": 2, "emphasis": "None"}
    assert plan.dropped == []
    job.init_image = _gradient()
    assert d.to_upstream(job).requests[0].path == "/sdapi/v1/img2img"
    images = [encode_base64(_gradient(8, 8), "png")] * 3
    info = {"index_of_first_image": 1, "all_seeds": [5, 6], "sampler_name": "DPM++ 2M", "sd_model_name": "m",
            "extra_generation_params": {"Schedule type": "Karras"}}
    answer = UpstreamAnswer(200, {}, json.dumps({"images": images, "info": json.dumps(info)}).encode())
    result = d.from_upstream(job, plan, [answer])
    assert len(result.images) == 2 and result.seeds == [5, 6] and result.schedule == "Karras"
    assert result.model.kind == "remote" and result.model.name == "m"
    from backends.job import GenerationFailed

    with pytest.raises(GenerationFailed, match="not an A1111 response"):
        d.from_upstream(job, plan, [UpstreamAnswer(200, {}, b'{"detail": "x"}')])
    assert d.A1111Dialect.forward_spec.upstream_path("/v1/sdapi/v1/txt2img") == "/sdapi/v1/txt2img"

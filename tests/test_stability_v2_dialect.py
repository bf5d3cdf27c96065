"""Pure unit tests of the v2beta dialect: size tables, request parsing and its error strings, the rate limiter, the
error shape, and the reverse pair the relay uses (Job → v2beta request, v2beta answer → Result)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from backends.dialects import stability_v2 as d
from backends.styles import DEFAULT_PATH
from backends.job import GenerationFailed, InvalidRequest, Job, Lora, ModelInfo, QueueFull, Result
from backends.upstream import UpstreamAnswer, UpstreamRequest

# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("table, megapixels", [(d.SIZES_1MP, 2**20), (d.SIZES_1_5MP, 1.5e6)])
def test_size_tables_keep_ratio_and_megapixels(table, megapixels):
    assert tuple(table) == d.ASPECT_RATIOS
    for aspect, (w, h) in table.items():
        a, b = (int(x) for x in aspect.split(":"))
        assert abs(w / h / (a / b) - 1) <= 0.03, aspect
        assert abs(w * h / megapixels - 1) <= 0.10, aspect
        assert w % 64 == 0 and h % 64 == 0


def test_output_size_scales_for_family_and_config():
    assert d.output_size("ultra", "1:1") == (1024, 1024)
    assert d.output_size("core", "16:9", "sdxl") == (1600, 896)
    assert d.output_size("ultra", "1:1", "sd1") == (512, 512)
    w, h = d.output_size("sd3", "21:9", "sdxl", 0.25)
    assert (w, h) == (384, 160) and w % 8 == 0 and h % 8 == 0


@pytest.mark.parametrize("size, aspect", [((1024, 1024), "1:1"), ((1920, 1080), "16:9"), ((100, 1000), "9:21"),
                                          ((96, 64), "3:2"), ((800, 1000), "4:5")])
def test_nearest_aspect_ratio(size, aspect):
    assert d.nearest_aspect_ratio(*size) == aspect


# ------------------------------------------------------------------------------------------------ requests


def test_parse_request_defaults_and_coercion():
    req = d.parse_request("core", {"prompt": "a cat", "seed": "", "none": b"", "junk": "1"})
    assert (req.aspect_ratio, req.seed, req.output_format, req.style_preset) == ("1:1", 0, "png", None)
    sd3 = d.parse_request("sd3", {"prompt": "a cat", "model": "sd3-large-turbo", "cfg_scale": "2.5", "seed": "42"})
    assert sd3.canonical_model == "sd3.5-large-turbo" and sd3.cfg_scale == 2.5 and sd3.seed == 42


@pytest.mark.parametrize("endpoint, fields, expected", [
    ("core", {}, "prompt: is required"),
    ("core", {"prompt": ""}, "prompt: cannot be empty"),
    ("core", {"prompt": "x" * 10001}, "prompt: must be at most 10000 characters"),
    ("core", {"prompt": "x", "seed": "4294967295"}, "seed: must be between 0 and 4294967294"),
    ("core", {"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio: must be one of 21:9, 16:9"),
    ("sd3", {"prompt": "x", "cfg_scale": "11"}, "cfg_scale: must be between 1 and 10"),
    ("sd3", {"prompt": "x", "mode": "image-to-image"}, "image: is required for image-to-image mode"),
    ("ultra", {"prompt": "x", "image": b"\x89PNG"}, "strength: is required when image is provided"),
])
def test_parse_request_errors(endpoint, fields, expected):
    with pytest.raises(d.V2Error) as info:
        d.parse_request(endpoint, fields)
    assert info.value.status == 400 and info.value.name == "bad_request"
    assert any(e.startswith(expected) for e in info.value.errors), info.value.errors


def test_wants_json():
    assert d.wants_json("application/json")
    assert d.wants_json("application/json, image/*")
    assert not d.wants_json("image/*") and not d.wants_json(None) and not d.wants_json("*/*")
    assert not d.wants_json("image/png, application/json")


def test_settings_from_config(caplog):
    s = d.Settings.from_config({"stability_v2": {"steps": 8, "bogus": 1}, "a1111": {"styles_file": "/x.json"}})
    assert s.steps == 8 and s.styles_file == "/x.json" and s.rate_limit == 150
    assert "bogus" in caplog.text
    assert d.Settings.from_config({}).styles_file.endswith("styles.json")


@pytest.mark.parametrize("section", [{"steps": "many"}, {"steps": 0}, {"sampler": "No Such Sampler"}])
def test_bad_settings_fail_at_startup(section):
    from backends.config import ConfigError

    with pytest.raises(ConfigError, match="stability_v2"):
        d.Settings.from_config({"stability_v2": section})


def test_every_preset_is_in_styles_json():
    names = {item["name"] for item in json.loads(DEFAULT_PATH.read_text())}
    assert set(d.STYLE_PRESETS) <= names


class FakeClock:
    """`time.time()` for the `limits` library's memory storage: the test sets the clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


def test_rate_limiter(monkeypatch):
    import limits.storage.memory

    clock = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", clock)
    start = clock.now

    def allow(limiter, caller, now):
        clock.now = start + now
        return limiter.allow(caller)

    limiter = d.RateLimiter(limit=2, window=10, timeout=60)
    assert allow(limiter, "a", now=0) and allow(limiter, "a", now=1)
    assert not allow(limiter, "a", now=2)  # third within 10 s: timed out for 60 s
    assert allow(limiter, "b", now=2)
    assert not allow(limiter, "a", now=61)
    assert allow(limiter, "a", now=62.5)
    assert d.RateLimiter(0, 10, 60).allow("a")


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("exc, status, name, text", [
    (d.payload_too_large(), 413, "payload_too_large", "10MiB"),
    (InvalidRequest("width must be a multiple of 8"), 400, "bad_request", "width"),
    (QueueFull("the queue is full"), 429, "rate_limit_exceeded", "queue"),
    (RuntimeError("secret internals"), 500, "internal_error", "unexpected server error"),
])
def test_error_body(exc, status, name, text):
    got_status, body = d.error_body(exc, "ab" * 16)
    assert got_status == status and body["name"] == name and body["id"] == "ab" * 16
    assert set(body) == {"id", "name", "errors"} and text in body["errors"][0]
    assert "secret" not in json.dumps(body)


# ------------------------------------------------------------------------------------------------ job → request


def _fields(req: UpstreamRequest) -> dict:
    """The text parts of a planned multipart request."""
    return {name: value for name, (filename, value, *_) in req.files if filename is None}


def _files(req: UpstreamRequest) -> dict:
    """The file parts of a planned multipart request: name → (filename, data, mime)."""
    return {name: part for name, part in req.files if part[0] is not None}


def test_job_to_upstream_sd3_model_and_size():
    job = Job(prompt="a cat", negative_prompt="dog", width=1344, height=768, cfg_scale=5, seed=9, model="sd3-large",
              steps=30)
    plan = d.plan_upstream(job)
    assert plan.context.endpoint == "sd3" and len(plan.requests) == 1
    req = plan.requests[0]
    assert req.path == "/v2beta/stable-image/generate/sd3" and req.headers == {"accept": "application/json"}
    assert _fields(req) == {"prompt": "a cat", "negative_prompt": "dog", "aspect_ratio": "16:9",
                            "model": "sd3.5-large", "cfg_scale": "5", "seed": "9"}
    assert plan.dropped == ["steps"]


def test_job_to_upstream_reports_what_cannot_travel():
    job = Job(prompt="a cat", width=512, height=768, sampler="DPM++ 2M", cfg_scale=9, clip_skip=2,
              loras=[Lora("x")], model="sd_xl_base_1.0.safetensors", batch_size=2, n_iter=2, seed=4294967293)
    plan = d.plan_upstream(job)
    assert plan.context.endpoint == "core"
    assert set(plan.dropped) == {"width", "height", "cfg_scale", "sampler", "clip_skip", "loras", "model", "seed"}
    assert [_fields(r)["seed"] for r in plan.requests] == ["4294967293", "4294967294", "0", "0"]
    assert _fields(plan.requests[0])["aspect_ratio"] == "2:3"
    assert all(_files(r) == {"none": ("none", b"", "application/octet-stream")} for r in plan.requests)


def test_job_to_upstream_image_to_image():
    init = Image.new("RGB", (96, 64), "red")
    plan = d.plan_upstream(Job(prompt="a cat", init_image=init, denoising_strength=0.4, seed=-1))
    req = plan.requests[0]
    fields = _fields(req)
    assert plan.context.endpoint == "sd3" and fields["mode"] == "image-to-image" and fields["strength"] == "0.4"
    assert "aspect_ratio" not in fields and fields["seed"] == "0"
    assert Image.open(io.BytesIO(_files(req)["image"][1])).size == (96, 64)
    core = d.plan_upstream(Job(prompt="a cat", init_image=init, mask=init), endpoint="core")
    assert {"init_image", "denoising_strength", "mask"} <= set(core.dropped) and "image" not in _files(core.requests[0])
    ultra = d.plan_upstream(Job(prompt="a cat", init_image=init, model="ultra"))
    assert ultra.context.endpoint == "ultra" and "mode" not in _fields(ultra.requests[0])


def test_job_from_this_dialect_keeps_its_fields():
    fields = {"prompt": "a cat", "aspect_ratio": "9:16", "style_preset": "anime", "output_format": "webp", "seed": 0}
    job = Job(prompt="anime artwork of a cat, ...", seed=77, steps=30,
              extra={"stability_v2": {"endpoint": "ultra", "fields": fields}})
    plan = d.plan_upstream(job, accept="image/*")
    assert plan.context.endpoint == "ultra" and plan.dropped == []
    assert _fields(plan.requests[0]) == {"prompt": "a cat", "aspect_ratio": "9:16", "style_preset": "anime",
                                         "output_format": "webp", "seed": "77"}


def test_httpx_kwargs_make_real_multipart():
    req = d.plan_upstream(Job(prompt="a cat", seed=1)).requests[0]
    assert req.method == "POST"
    built = httpx.Request(req.method, "http://gw/sd" + req.path, files=req.files, headers=req.headers)
    assert built.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = built.read()
    assert b'name="prompt"\r\n\r\na cat' in body and b'name="none"; filename="none"' in body


def test_unknown_endpoint_is_refused():
    with pytest.raises(InvalidRequest):
        d.plan_upstream(Job(prompt="x"), endpoint="flux")


# ------------------------------------------------------------------------------------------------ answer → result


def _png(color="blue", size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_image_answer():
    got = d.read_answer(UpstreamAnswer(200, {"Content-Type": "image/png", "Finish-Reason": "SUCCESS", "Seed": "123",
                                             "X-Request-Id": "r1"}, _png()))
    assert got.seed == 123 and got.finish_reason == "SUCCESS" and got.request_id == "r1"
    assert got.image.size == (64, 48) and got.mime == "image/png"


def test_parse_json_answer():
    body = json.dumps({"image": base64.b64encode(_png()).decode(), "finish_reason": "CONTENT_FILTERED", "seed": 5})
    got = d.read_answer(UpstreamAnswer(200, {"content-type": "application/json; type=image/png"}, body.encode()))
    assert got.seed == 5 and got.finish_reason == "CONTENT_FILTERED"
    with pytest.raises(GenerationFailed):
        d.read_answer(UpstreamAnswer(200, {"content-type": "application/json"}, b'{"nope": 1}'))
    with pytest.raises(GenerationFailed):
        d.read_answer(UpstreamAnswer(200, {"content-type": "image/png"}, b"<html>gateway</html>"))


# Error answers never reach the reverse pair: the gateway client raises `UpstreamError` first, parsed by the one
# parser in backends/remote/errors.py (its v2beta shape: tests/test_relay_faults.py D3_SHAPES).


@pytest.mark.parametrize("status, headers, body, name, text, caller_status", [
    (400, {}, {"id": "abc", "name": "bad_request", "errors": ["prompt: is required"]}, "bad_request",
     "prompt: is required", 400),
    (404, {}, {"id": "abc", "name": "not_found", "message": "engine not found"}, "not_found", "engine not found", 404),
    (401, {}, {"error": {"message": "invalid token (request id: x)", "type": "one_api_error"}}, "one_api_error",
     "invalid token", 502),
    (429, {}, {"id": "rate_limit_exceeded", "name": "rate_limit_exceeded", "errors": ["slow down"]},
     "rate_limit_exceeded", "slow down", 429),
    (500, {}, {"status": "error", "messege": "out of memory"}, "error", "out of memory", 502),
    (502, {"Retry-After": "7"}, None, None, "Bad Gateway", 502),
])
def test_upstream_errors(status, headers, body, name, text, caller_status):
    """v2beta error answers as the relay reads them: once, in backends/remote/errors.py (the gateway client raises
    before any reverse pair sees the answer), then rendered in the v2beta shape for a v2beta caller."""
    from backends.remote.errors import UpstreamError

    content = json.dumps(body).encode() if body is not None else b"Bad Gateway"
    err = UpstreamError.from_response("gw", status, {k.lower(): v for k, v in headers.items()}, content,
                                      retryable=status in (429, 502), retry_after=7.0 if status == 502 else None)
    assert err.http_status == status and err.status == caller_status and text in err.message
    assert err.details["upstream_status"] == status and err.provider_code == name
    assert err.code == (name or "upstream_error")
    if status == 429:
        assert err.retryable and err.shape == "stability_v2"
    if status == 502:
        assert err.retry_after == 7.0 and err.retryable
    # rendered back in the v2beta shape: the caller's status and the gateway's words
    rendered_status, rendered = d.error_body(err, "0" * 32)
    assert rendered_status == caller_status and set(rendered) == {"id", "name", "errors"}
    assert any(text in e for e in rendered["errors"])


def test_reply_round_trip_and_filtered_images():
    """Our own answer, parsed by the relay side, gives back the image and seed; a filtered image stays filtered."""
    job = Job(prompt="a cat", steps=2, extra={"stability_v2": {"endpoint": "core", "fields": {}}})
    info = ModelInfo(name="tiny", title="tiny", source="x", kind="folder")
    image = Image.new("RGB", (64, 64), "green")
    result = Result(job=job, images=[image], seeds=[99], model=info, sampler="Euler", schedule="Automatic",
                    scheduler_class="EulerDiscreteScheduler")
    req = d.parse_request("core", {"prompt": "a cat", "output_format": "webp"})
    for accept_json in (False, True):
        reply = d.result_to_reply(result, req, accept_json=accept_json, request_id="f" * 32)
        got = d.read_answer(UpstreamAnswer(reply.status, {"content-type": reply.media_type, **reply.headers},
                                           reply.body))
        assert got.seed == 99 and got.image.size == (64, 64) and got.mime == "image/webp"
    filtered = d.UpstreamImage(image=image, seed=3, finish_reason="CONTENT_FILTERED", request_id=None, data=b"",
                               mime="image/png")
    plan = d.plan_upstream(Job(prompt="a cat", width=640, height=640))
    relayed = d.images_to_result(Job(prompt="a cat"), plan, [filtered])
    assert relayed.seeds == [3] and relayed.model.kind == "remote"
    assert d.finish_reason(relayed, 0) == "CONTENT_FILTERED" and relayed.nsfw == [True]
    assert any("cannot carry: width, height" in n for n in relayed.notes)
    with pytest.raises(GenerationFailed):
        d.result_to_reply(Result(job=job, images=[], seeds=[], model=info, sampler="", schedule="",
                                 scheduler_class=""), req, accept_json=False, request_id="x")

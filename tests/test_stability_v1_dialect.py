"""Stability v1 dialect, pure: prompt weights, size rules, form fields, errors, and the reverse pair (Job → v1
request, v1 response → Result) on recorded-style bodies. No server, no model."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from backends.config import Config
from backends.dialects import stability_v1 as v1
from backends.dialects.base import Call
from backends.job import (
    LOCAL,
    GenerationFailed,
    InvalidRequest,
    Job,
    Lora,
    ModelInfo,
    ModelNotFound,
    QueueFull,
    Result,
    Route,
    SdgateError,
)
from backends.keys import ApiKeys
from backends.remote.errors import UpstreamError, parse_error_body
from backends.service import Service
from backends.upstream import UpstreamAnswer, UpstreamPlan

TP = v1.TextPrompt


def png_bytes(size=(64, 64), color=(200, 10, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    "prompts,want",
    [
        ([TP(text="a cat")], ("a cat", "")),
        ([TP(text="a cat", weight=1.5), TP(text="a hat")], ("(a cat:1.5), a hat", "")),
        ([TP(text="a cat"), TP(text="blurry", weight=-1)], ("a cat", "blurry")),
        ([TP(text="a cat"), TP(text="blurry", weight=-0.8167237)], ("a cat", "(blurry:0.8167)")),
        ([TP(text="a cat"), TP(text="gone", weight=0), TP(text="  ")], ("a cat", "")),
        ([TP(text="a (red:1.2) fox")], ("a (red:1.2) fox", "")),  # A1111 syntax inside a text is kept
        ([TP(text="x", weight=2), TP(text="y", weight=-2), TP(text="z", weight=-1)], ("(x:2)", "(y:2), z")),
    ],
)
def test_prompts_to_text(prompts, want):
    assert v1.prompts_to_text(prompts) == want


# --------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", v1.SDXL_V1_SIZES)
def test_sdxl_accepts_each_of_the_nine_pairs(size):
    for engine in ("stable-diffusion-xl-1024-v1-0", "stable-diffusion-xl-1024-v0-9"):
        v1.check_size(engine, *size)


@pytest.mark.parametrize(
    "engine,size,name",
    [
        ("stable-diffusion-xl-1024-v1-0", (768, 768), "invalid_sdxl_v1_dimensions"),
        ("stable-diffusion-xl-1024-v1-0", (1024, 896), "invalid_sdxl_v1_dimensions"),
        ("stable-diffusion-xl-1024-v1-0", (500, 512), "invalid_height_or_width"),
        ("stable-diffusion-v1-6", (256, 512), "invalid_height_or_width"),
        ("stable-diffusion-v1-6", (1600, 512), "invalid_height_or_width"),
        ("stable-diffusion-xl-beta-v2-2-2", (576, 576), "invalid_sdxl_v222_dimensions"),
        ("stable-diffusion-xl-beta-v2-2-2", (960, 128), "invalid_sdxl_v222_dimensions"),
        ("stable-diffusion-xl-beta-v2-2-2", (64, 128), "invalid_sdxl_v222_dimensions"),
        ("stable-diffusion-512-v2-1", (256, 512), "invalid_pixel_count"),
        ("stable-diffusion-v1-5", (1088, 1024), "invalid_pixel_count"),
        ("stable-diffusion-768-v2-1", (512, 512), "invalid_pixel_count"),
        ("my-local-model", (2112, 512), "invalid_height_or_width"),
        ("my-local-model", (100, 512), "invalid_height_or_width"),
    ],
)
def test_size_rule_violations(engine, size, name):
    with pytest.raises(v1.V1Error) as e:
        v1.check_size(engine, *size)
    assert e.value.status == 400 and e.value.code == name
    assert f"{size[0]}x{size[1]}" in e.value.message


@pytest.mark.parametrize(
    "engine,size",
    [
        ("stable-diffusion-v1-6", (320, 1536)),
        ("stable-diffusion-v1-6", (1536, 320)),
        ("stable-diffusion-xl-beta-v2-2-2", (128, 128)),
        ("stable-diffusion-xl-beta-v2-2-2", (512, 896)),
        ("stable-diffusion-xl-beta-v2-2-2", (896, 512)),
        ("stable-diffusion-512-v2-1", (512, 512)),
        ("stable-diffusion-512-v2-1", (1024, 1024)),
        ("stable-diffusion-768-v2-1", (768, 768)),
        ("my-local-model", (64 * 3, 2048)),
    ],
)
def test_size_rule_passes(engine, size):
    v1.check_size(engine, *size)


def test_default_sizes():
    assert v1.default_size("stable-diffusion-xl-1024-v1-0") == (1024, 1024)
    assert v1.default_size("stable-diffusion-768-v2-1") == (768, 768)
    assert v1.default_size("stable-diffusion-v1-6") == (512, 512)
    assert v1.default_size("my-sdxl", "sdxl") == (1024, 1024)
    for engine in v1.ENGINES.values():  # an omitted size never breaks the engine's own rule
        v1.check_size(engine.id, *engine.default_size)


# ------------------------------------------------------------------------------------ small translations


def test_form_fields_gathers_indexed_prompts():
    items = [
        ("text_prompts[1][text]", "blurry"), ("text_prompts[1][weight]", "-1"),
        ("text_prompts[0][text]", "first"), ("text_prompts[0][text]", "a cat"),  # a repeated key overrides
        ("text_prompts[0][weight]", ""), ("samples", "2"), ("style_preset", ""), ("extras[foo]", "1"),
        ("init_image", b"\x89PNG..."),
    ]
    fields = v1.form_fields(items)
    assert fields == {"samples": "2", "text_prompts": [{"text": "a cat"}, {"text": "blurry", "weight": "-1"}]}
    req = v1.ImageToImageRequest.model_validate(fields)
    assert req.samples == 2 and req.text_prompts[1].weight == -1.0


@pytest.mark.parametrize(
    "accept,png",
    [(None, False), ("", False), ("application/json", False), ("*/*", False), ("image/png", True),
     ("image/*", True), ("image/png, application/json", True), ("application/json, image/png", False),
     ("text/html", False)],
)
def test_wants_png(accept, png):
    assert v1.wants_png(accept) is png


def test_steps_strict_and_lenient():
    assert v1.resolve_steps(None, False) == 30
    assert v1.resolve_steps(50, False) == 50
    for bad in (9, 51, 150):
        with pytest.raises(v1.V1Error, match="steps"):
            v1.resolve_steps(bad, False)
    assert v1.resolve_steps(150, True) == 150
    assert v1.resolve_steps(400, True) == 150 and v1.resolve_steps(1, True) == 10


def test_random_seed_never_zero_and_leaves_room():
    assert v1.RANDOM_SEEDS.low == 1 and v1.RANDOM_SEEDS.high == v1.MAX_SEED
    for _ in range(200):
        seed = v1.resolve_seed(0, 10)
        assert 1 <= seed and seed + 9 <= v1.MAX_SEED
    assert v1.resolve_seed(None, 1) >= 1
    assert v1.resolve_seed(42, 3) == 42


def test_mask_sources():
    init = Image.new("RGBA", (4, 2), (10, 20, 30, 255))
    init.putpixel((0, 0), (10, 20, 30, 0))
    mask = Image.new("L", (4, 2), 0)
    mask.putpixel((1, 1), 255)
    assert v1.mask_from("MASK_IMAGE_WHITE", init, mask).getpixel((1, 1)) == 255
    assert v1.mask_from("MASK_IMAGE_BLACK", init, mask).getpixel((1, 1)) == 0
    alpha = v1.mask_from("INIT_IMAGE_ALPHA", init, None)
    assert alpha.getpixel((0, 0)) == 255 and alpha.getpixel((1, 1)) == 0  # transparent → repaint
    with pytest.raises(v1.V1Error) as e:
        v1.mask_from("INIT_IMAGE_ALPHA", init.convert("RGB"), None)
    assert e.value.code == "invalid_mask_image"
    with pytest.raises(v1.V1Error) as e:
        v1.mask_from("MASK_IMAGE_WHITE", init, Image.new("L", (2, 2)))
    assert e.value.code == "invalid_image_dimensions"


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "exc,status,name",
    [
        (v1.V1Error(400, "invalid_samples", "x"), 400, "invalid_samples"),
        (InvalidRequest("width must be..."), 400, "bad_request"),
        (ModelNotFound("gone"), 404, "not_found"),
        (QueueFull("full"), 429, "rate_limit_exceeded"),
        (GenerationFailed("boom"), 500, "server_error"),
    ],
)
def test_error_body(exc, status, name):
    reply = v1.render_error(exc)
    got_status, body, headers = reply.status, reply.body, reply.headers
    assert (got_status, body["name"], body["message"]) == (status, name, exc.message)
    assert set(body) == {"id", "name", "message"} and len(body["id"]) == 32
    assert ("Retry-After" in headers) is (status == 429)


def test_unexpected_errors_do_not_leak():
    reply = v1.render_error(RuntimeError("/secret/path exploded"))
    status, body = reply.status, reply.body
    assert status == 500 and body["name"] == "server_error" and "secret" not in body["message"]


def test_validation_messages_name_the_field():
    with pytest.raises(v1.V1Error) as e:
        v1.parse_json(v1.TextToImageRequest, b'{"text_prompts": [{"text": "x", "weight": "heavy"}], "cfg_scale": 99}')
    assert e.value.code == "bad_request"
    assert "text_prompts[0].weight" in e.value.message and "cfg_scale" in e.value.message
    with pytest.raises(v1.V1Error, match="finite"):  # JSON's NaN/Infinity extensions are refused
        v1.parse_json(v1.TextToImageRequest, b'{"text_prompts": [{"text": "x", "weight": NaN}]}')


# ------------------------------------------------------------------------------------ request → Job


class FakeService(Service):
    """The part of the Service the v1 dialect uses: config, keys, the route-aware model lookup and the engine's
    checks (which count the jobs they see). Engines are the v1 ids and `tiny-sdxl`."""

    def __init__(self, **raw):
        self.config = Config(raw=raw)
        self.keys = ApiKeys({}, environ={})
        self.validated: list[Job] = []

    def resolve_model(self, name: str | None, route: Route) -> ModelInfo:
        if route.gateway is not None:
            return ModelInfo(name=name, title=f"gateway:{route.gateway}/{name}", source=name, kind="gateway")
        if name not in v1.ENGINES and name != "tiny-sdxl":
            raise ModelNotFound(f"model {name!r} not found")
        family = "sdxl" if name == "tiny-sdxl" or "xl-1024" in name else "sd1"
        return ModelInfo(name=name, title=f"{name}.safetensors [abc]", source=name, kind="single_file",
                         family=family)

    def validate(self, job: Job) -> None:
        self.validated.append(job)


def fake_api(**raw) -> v1.StabilityV1Dialect:
    styles = Path(__file__).resolve().parents[1] / "styles.json"
    return v1.StabilityV1Dialect(FakeService(**raw), styles_path=styles)


def v1_call(engine_id: str | None = None, accept: str | None = None, authorization: str | None = None,
            host: str = "127.0.0.1", route: Route = LOCAL) -> Call:
    headers = {k: v for k, v in (("accept", accept), ("authorization", authorization)) if v is not None}
    params = {"engine_id": engine_id} if engine_id is not None else {}
    return Call(route=route, client_host=host, headers=headers, params=params)


def prepare(api: v1.StabilityV1Dialect, operation: str, engine_id: str, body, accept: str | None = None,
            **kw) -> v1.Planned:
    return api.parse(operation, body, v1_call(engine_id, accept, **kw))


def test_text_to_image_job():
    api = fake_api()
    body = {"text_prompts": [{"text": "a cat", "weight": 1.5}, {"text": "blurry", "weight": -1}], "seed": 9,
            "samples": 3, "cfg_scale": 5, "steps": 12, "sampler": "K_HEUN", "style_preset": "enhance",
            "extras": {"x": 1}, "unknown_field": True}
    prepared = prepare(api, v1.TEXT_TO_IMAGE, "stable-diffusion-xl-1024-v1-0", json.dumps(body).encode(), None)
    job = prepared.job
    assert (job.width, job.height) == (1024, 1024)  # the SDXL default when omitted
    assert job.prompt == "breathtaking (a cat:1.5), award-winning, professional, highly detailed"
    assert job.negative_prompt.startswith("blurry, ugly")
    assert (job.seed, job.batch_size, job.n_iter, job.cfg_scale, job.steps, job.sampler) == (9, 3, 1, 5.0, 12, "K_HEUN")
    assert job.model == "stable-diffusion-xl-1024-v1-0.safetensors [abc]" and job.style == "stability_v1"
    assert prepared.png is False
    assert job.backend is None and api.service.validated == [job]  # local: the engine's checks ran


def test_the_same_fields_as_a_dict_parse_the_same():
    """A tab hands `parse` the fields, a route the raw JSON: the same Job and the same errors either way."""
    body = {"text_prompts": [{"text": "a cat", "weight": 1.5}], "seed": 9, "steps": 12, "sampler": "K_HEUN"}
    from_bytes = prepare(fake_api(), v1.TEXT_TO_IMAGE, "stable-diffusion-v1-6", json.dumps(body).encode()).job
    from_dict = prepare(fake_api(), v1.TEXT_TO_IMAGE, "stable-diffusion-v1-6", body).job
    for name in ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed", "sampler", "model"):
        assert getattr(from_dict, name) == getattr(from_bytes, name), name
    errors = []
    for bad in ({"text_prompts": [], "cfg_scale": 99}, json.dumps({"text_prompts": [], "cfg_scale": 99})):
        with pytest.raises(v1.V1Error) as e:
            prepare(fake_api(), v1.TEXT_TO_IMAGE, "stable-diffusion-v1-6", bad)
        errors.append((e.value.status, e.value.code, e.value.message))
    assert errors[0] == errors[1] and errors[0][:2] == (400, "bad_request")


def test_a_gateway_route_passes_the_engine_name_on():
    api = fake_api()
    planned = prepare(api, v1.TEXT_TO_IMAGE, "their-engine", b'{"text_prompts":[{"text":"x"}],"seed":3}',
                      route=Route("gw"))
    assert planned.job.backend == "gw" and planned.job.model == "gateway:gw/their-engine"
    assert planned.job.style == "stability_v1" and planned.job.seed == 3


def test_text_to_image_defaults_and_lenient_steps():
    job = prepare(fake_api(), v1.TEXT_TO_IMAGE, "stable-diffusion-v1-6", b'{"text_prompts":[{"text":"x"}]}', "").job
    assert (job.width, job.height, job.steps, job.cfg_scale, job.sampler) == (512, 512, 30, 7.0, "K_DPMPP_2M")
    assert 1 <= job.seed <= v1.MAX_SEED
    lenient = fake_api(stability_v1={"lenient": True})
    assert prepare(lenient, v1.TEXT_TO_IMAGE, "stable-diffusion-v1-6",
                   b'{"text_prompts":[{"text":"x"}],"steps":120}', None).job.steps == 120
    # a local model name is an engine too, with its family's default size
    assert prepare(fake_api(), v1.TEXT_TO_IMAGE, "tiny-sdxl", b'{"text_prompts":[{"text":"x"}]}',
                   None).job.width == 1024


def test_order_of_answers_engine_then_body():
    with pytest.raises(v1.V1Error) as e:
        prepare(fake_api(), v1.TEXT_TO_IMAGE, "nope", b"garbage", None)
    assert e.value.status == 404


def authorize(api: v1.StabilityV1Dialect, authorization: str | None, host: str) -> None:
    api.authorize(v1_call(authorization=authorization, host=host))


def test_auth_rules():
    api = fake_api()
    with pytest.raises(v1.V1Error, match="missing authorization header"):
        authorize(api, None, "127.0.0.1")
    authorize(api, "Bearer anything", "127.0.0.1")  # no keys configured: any key from loopback
    with pytest.raises(v1.V1Error, match="loopback"):
        authorize(api, "Bearer anything", "10.1.2.3")
    api.service.keys = ApiKeys({"keys": {"stability": ["sk-1"]}}, environ={})
    authorize(api, "Bearer sk-1", "10.1.2.3")
    authorize(api, "sk-1", "10.1.2.3")
    with pytest.raises(v1.V1Error, match="invalid API key"):
        authorize(api, "Bearer sk-2", "127.0.0.1")
    api.authorize(Call(ui=True))  # a UI tab's person passed the UI's own login


def test_image_to_image_job():
    items = [("text_prompts[0][text]", "a cat"), ("image_strength", "0.25"), ("samples", "2"),
             ("init_image", png_bytes((128, 192)))]
    job = prepare(fake_api(), v1.IMAGE_TO_IMAGE, "stable-diffusion-xl-beta-v2-2-2", items, None).job
    assert (job.width, job.height) == (128, 192) and job.denoising_strength == 0.75 and job.mask is None
    items += [("init_image_mode", "STEP_SCHEDULE"), ("step_schedule_start", "0.4")]
    job = prepare(fake_api(), v1.IMAGE_TO_IMAGE, "stable-diffusion-xl-beta-v2-2-2", items, None).job
    assert job.denoising_strength == 0.4
    # a base64 text part is tolerated in place of a file
    b64 = [("text_prompts[0][text]", "a cat"), ("init_image", base64.b64encode(png_bytes((128, 128))).decode())]
    assert prepare(fake_api(), v1.IMAGE_TO_IMAGE, "stable-diffusion-xl-beta-v2-2-2", b64, None).job.width == 128


def test_masking_job():
    items = [("text_prompts[0][text]", "a cat"), ("mask_source", "MASK_IMAGE_BLACK"),
             ("init_image", png_bytes((128, 128))), ("mask_image", png_bytes((128, 128), 0, "L"))]
    prepared = prepare(fake_api(), v1.MASKING, "stable-diffusion-xl-beta-v2-2-2", items, None)
    assert prepared.job.denoising_strength == 1.0 and prepared.job.mask.getpixel((0, 0)) == 255
    assert prepared.composite is not None


# ================================================================================= reverse: Job → request


class Sent:
    """`to_upstream`'s plan seen as the one v1 request it holds: the request's fields, the engine chosen, and
    the Job fields v1 could not carry (`plan.dropped`) with their notes."""

    def __init__(self, plan: UpstreamPlan):
        self.plan = plan
        (self.request,) = plan.requests
        self.engine_id = plan.context.engine_id
        self.not_carried = plan.dropped
        self.notes = plan.notes

    def __getattr__(self, name):
        return getattr(self.request, name)


def job_to_request(job: Job, engine_id: str | None = None, *, accept: str = "application/json") -> Sent:
    """What the relay does: the Job's model is the engine named upstream (none: the engine its size suits)."""
    return Sent(v1.to_upstream(replace(job, model=engine_id) if engine_id else job, accept=accept))


def response_to_result(job: Job, status: int, headers, body: bytes, *, request: Sent | None = None) -> Result:
    plan = request.plan if request is not None else UpstreamPlan([])
    return v1.from_upstream(job, plan, [UpstreamAnswer(status, dict(headers), body)])


def test_job_to_request_txt2img():
    job = Job(prompt="a cat", negative_prompt="blurry", width=1024, height=1024, steps=20, cfg_scale=6.5,
              sampler="DPM++ 2M", seed=77, batch_size=2, n_iter=2)
    req = job_to_request(job)
    assert req.engine_id == "stable-diffusion-xl-1024-v1-0"  # an SDXL size picks the SDXL engine
    assert (req.method, req.path) == ("POST", "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image")
    assert req.headers == {"Accept": "application/json", "Content-Type": "application/json"}
    assert req.json == {
        "text_prompts": [{"text": "a cat", "weight": 1.0}, {"text": "blurry", "weight": -1.0}],
        "height": 1024, "width": 1024, "cfg_scale": 6.5, "samples": 4, "seed": 77, "steps": 20,
        "sampler": "K_DPMPP_2M",
    }
    assert req.not_carried == [] and req.files is None
    assert job_to_request(Job(width=512, height=512)).engine_id == "stable-diffusion-v1-6"
    assert job_to_request(Job(model="stable-diffusion-v1-5")).engine_id == "stable-diffusion-v1-5"
    odd = job_to_request(Job(), "my model [abc123]")
    assert odd.engine_id == "my model [abc123]" and odd.path == "/v1/generation/my%20model%20%5Babc123%5D/text-to-image"


def test_job_to_request_png_only_for_one_sample():
    assert job_to_request(Job(seed=1), accept="image/png").headers["Accept"] == "image/png"
    assert job_to_request(Job(seed=1, batch_size=2), accept="image/png").headers["Accept"] == "application/json"


def test_job_to_request_reports_what_v1_cannot_carry():
    job = Job(prompt="a cat <lora:x:1>", steps=80, cfg_scale=40, sampler="UniPC", schedule="Karras", seed=0,
              clip_skip=2, loras=[Lora("y")], eta=0.5, batch_size=16)
    req = job_to_request(job, "stable-diffusion-v1-6")
    assert req.not_carried == ["batch_size", "steps", "cfg_scale", "seed", "sampler", "schedule", "clip_skip",
                               "loras", "eta"]
    assert len(req.notes) == 10  # loras noted twice (list and prompt tag), reported once
    assert req.json["steps"] == 50 and req.json["cfg_scale"] == 35 and req.json["samples"] == 10
    assert req.json["seed"] == 0 and "sampler" not in req.json
    assert job_to_request(Job(seed=-1)).not_carried == []  # random is random in both


def test_job_to_request_checks_the_engine_size():
    with pytest.raises(v1.V1Error) as e:
        job_to_request(Job(width=768, height=768), "stable-diffusion-xl-1024-v1-0")
    assert e.value.code == "invalid_sdxl_v1_dimensions" and isinstance(e.value, SdgateError)


def test_job_to_request_img2img_and_masking():
    init = Image.new("RGB", (100, 100), (1, 2, 3))
    job = Job(prompt="a cat", negative_prompt="ugly", width=512, height=512, seed=5, init_image=init,
              denoising_strength=0.7)
    req = job_to_request(job)
    assert req.path == "/v1/generation/stable-diffusion-v1-6/image-to-image" and req.json is None
    assert req.data["text_prompts[0][text]"] == "a cat" and req.data["text_prompts[1][weight]"] == "-1.0"
    assert req.data["init_image_mode"] == "IMAGE_STRENGTH" and req.data["image_strength"] == "0.3"
    assert req.data["seed"] == "5" and "Content-Type" not in req.headers  # httpx sets the multipart boundary
    name, raw, mime = req.files["init_image"]
    assert mime == "image/png" and Image.open(io.BytesIO(raw)).size == (512, 512)  # sent at the Job's size
    job.mask = Image.new("L", (100, 100), 255)
    req = job_to_request(job)
    assert req.path.endswith("/image-to-image/masking") and req.data["mask_source"] == "MASK_IMAGE_WHITE"
    assert Image.open(io.BytesIO(req.files["mask_image"][1])).size == (512, 512)
    assert req.not_carried == ["denoising_strength"]


def test_round_trip_job_through_v1_is_exact():
    """Job → v1 JSON → this server's own parsing → the same generation parameters."""
    job = Job(prompt="a (red:1.2) fox", negative_prompt="blurry, ugly", width=512, height=768, steps=25,
              cfg_scale=5.5, sampler="Euler a", seed=1234, batch_size=3)
    req = job_to_request(job)
    again = prepare(fake_api(), v1.TEXT_TO_IMAGE, req.engine_id, json.dumps(req.json), req.headers["Accept"]).job
    for name in ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed", "batch_size"):
        assert getattr(again, name) == getattr(job, name), name
    assert again.sampler == "K_EULER_ANCESTRAL"


# =============================================================================== reverse: response → Result


def b64png(color=(0, 0, 255), size=(8, 8)) -> str:
    return base64.b64encode(png_bytes(size, color)).decode()


def test_response_json_artifacts():
    job = Job(seed=10, batch_size=2)
    req = job_to_request(job)
    body = json.dumps({"artifacts": [{"base64": b64png(), "finishReason": "SUCCESS", "seed": 10},
                                     {"base64": b64png((0, 255, 0)), "finishReason": "CONTENT_FILTERED", "seed": 11}]})
    result = response_to_result(job, 200, {"Content-Type": "application/json"}, body.encode(), request=req)
    assert result.seeds == [10, 11] and len(result.images) == 2
    assert result.images[1].getpixel((0, 0))[:3] == (0, 255, 0)
    assert result.model.name == "stable-diffusion-v1-6" and result.sampler == "Euler"
    assert any("CONTENT_FILTERED" in n for n in result.notes)
    assert result.nsfw == [False, True] and v1.finish_reasons(result) == ["SUCCESS", "CONTENT_FILTERED"]


@pytest.mark.parametrize("shape", ["nested", "bare"])
def test_response_tolerates_the_documented_variants(shape):
    arts = [{"base64": b64png(), "finishReason": "SUCCESS", "seed": 1},
            {"base64": b64png(), "finishReason": "SUCCESS", "seed": 2}]
    body = {"artifacts": [arts]} if shape == "nested" else arts  # docs/reference/seeds/000, 001 / the spec's schema
    result = response_to_result(Job(), 200, {}, json.dumps(body).encode())
    assert result.seeds == [1, 2]


def test_response_png_mode_reads_headers_case_insensitively():
    raw = png_bytes((16, 8))
    result = response_to_result(Job(), 200, {"content-type": "image/png", "finish-reason": "SUCCESS",
                                             "seed": "4294967295"}, raw)
    assert result.seeds == [4294967295] and result.images[0].size == (16, 8)


def test_response_error_artifacts():
    body = {"artifacts": [{"base64": b64png(), "finishReason": "ERROR", "seed": 1},
                          {"base64": b64png(), "finishReason": "SUCCESS", "seed": 2}]}
    result = response_to_result(Job(), 200, {}, json.dumps(body).encode())
    assert result.seeds == [2] and any("ERROR" in n for n in result.notes)
    body["artifacts"] = body["artifacts"][:1]
    with pytest.raises(GenerationFailed):
        response_to_result(Job(), 200, {}, json.dumps(body).encode())


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b'{"foo": 1}', b'{"artifacts": [{"base64": "!!"}]}',
                                  b'{"artifacts": []}'])
def test_response_garbage_is_a_502(body):
    with pytest.raises(GenerationFailed) as e:
        response_to_result(Job(), 200, {"content-type": "application/json"}, body)
    assert e.value.status == 502


# Error answers never reach the reverse pair: the gateway client raises first, through the one upstream error
# parser (backends/remote/errors.py). What a v1 upstream's errors become there, and in a v1 caller's answer:
@pytest.mark.parametrize(
    "status,body,caller_status,name,text",
    [
        (400, {"id": "e1", "name": "invalid_sdxl_v1_dimensions", "message": "but we received 768x768"},
         400, "invalid_sdxl_v1_dimensions", "768x768"),
        # the gateway rejecting *our* key is our configuration's fault, not the caller's: 502
        (401, {"id": "e2", "name": "unauthorized", "message": "missing authorization header"}, 502,
         "unauthorized", "missing authorization header"),
        (404, {"id": "e3", "name": "not_found", "message": "The specified engine (ID x) was not found."},
         404, "not_found", "ID x"),
        (429, {"id": "e4", "name": "rate_limit_exceeded", "message": "slow down"}, 429,
         "rate_limit_exceeded", "slow down"),
        (500, {"id": "e5", "name": "server_error", "message": "An unexpected server error occurred"},
         502, "server_error", "unexpected"),
        (401, {"error": {"message": "invalid token (request id: 42)", "type": "new_api_error", "code": ""}},
         502, "new_api_error", "invalid token"),
        (502, "<html>Bad Gateway</html>", 502, None, "Bad Gateway"),
    ],
)
def test_error_responses(status, body, caller_status, name, text):
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    parsed = parse_error_body(raw, "application/json" if isinstance(body, dict) else "text/html")
    err = UpstreamError.from_response("gw", status, {"retry-after": "7", "x-request-id": "rq"}, raw,
                                      retryable=False, retry_after=7)
    assert err.http_status == status and err.status == caller_status and text in err.message
    assert parsed.code == name and err.code == (name or "upstream_error")
    assert err.details["upstream_status"] == status and err.retry_after == 7 and err.request_id == "rq"
    if isinstance(body, dict) and "id" in body:
        assert parsed.shape == "stability_v1" and parsed.request_id == body["id"]
    answer = v1.render_error(err)  # a v1 caller gets v1's shape with the gateway's words
    assert answer.status == caller_status and set(answer.body) == {"id", "name", "message"}
    assert text in answer.body["message"]


class FakeGateway:
    """The `Gateway` a codec gets from the relay: records what is sent, answers with `answer`."""

    name = "gw"
    base_url = "http://gw.test/sd"
    poll_interval = 0.1

    def __init__(self, answer: UpstreamAnswer):
        self.answer = answer
        self.sent = []

    def seconds_left(self) -> float:
        return 60.0

    async def send(self, request):
        self.sent.append(request)
        return self.answer

    async def download(self, url: str) -> bytes:
        raise AssertionError("v1 answers carry their images")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("v1 answers at once")

    def unreadable(self, message: str) -> SdgateError:
        return SdgateError(f"unreadable: {message}")

    def timed_out(self, message: str) -> SdgateError:
        return SdgateError(message)

    def redact(self, content: bytes) -> bytes:
        return content


def test_call_upstream_sends_the_plan_and_reads_the_answer():
    import asyncio

    body = json.dumps({"artifacts": [{"base64": b64png(), "finishReason": "SUCCESS", "seed": 5}]}).encode()
    gateway = FakeGateway(UpstreamAnswer(200, {"content-type": "application/json"}, body))
    job = Job(prompt="a cat", seed=5, steps=80, width=512, height=512, sampler="K_EULER",
              model="stable-diffusion-v1-6")
    result = asyncio.run(fake_api().call_upstream(job, gateway))
    (sent,) = gateway.sent
    assert sent.path == "/v1/generation/stable-diffusion-v1-6/text-to-image" and sent.json["steps"] == 50
    assert result.seeds == [5] and result.sampler == "Euler" and result.model.name == "stable-diffusion-v1-6"
    assert result.dropped == ["steps"] and any(n.startswith("steps: ") for n in result.notes)
    garbage = FakeGateway(UpstreamAnswer(200, {"content-type": "application/json"}, b'{"foo": 1}'))
    with pytest.raises(SdgateError, match="unreadable: upstream answered 200"):  # the gateway's fault: its error
        asyncio.run(fake_api().call_upstream(job, garbage))

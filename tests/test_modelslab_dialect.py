"""The ModelsLab dialect without a server: body coercion, limits, the request → Job translation, the error
shape, settings, webhook rules, and the reverse pair the relay uses (Job → ModelsLab request, polling and
downloads, ModelsLab answer → Result; a forwarded request's answer finished and served by us)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from backends.config import Config, ConfigError
from backends.dialects import modelslab as d
from backends.dialects.base import Call
from backends.dialects.modelslab import JobStore, Record, webhook_problem
from backends.infotext import parse_generation_parameters
from backends.job import (
    GenerationFailed,
    Hires,
    InvalidRequest,
    Job,
    Lora,
    ModelInfo,
    ModelNotFound,
    QueueFull,
    Result,
    Route,
    Style,
)
from backends.keys import ApiKeys
from backends.service import ModelCatalog, Service

MODEL = ModelInfo(name="tiny-sd1", title="tiny-sd1 [abc]", source="/m/tiny-sd1", kind="folder", hash="abc")
V6 = d.FAMILY["v6"]


def plan(settings: d.Settings | None = None, **body):
    req = d.parse_request({"prompt": "a cat", "model_id": "sd15", **body})
    d.check(req, V6)
    return d.build_plan(req, model=MODEL, model_id=req.model_id, settings=settings or d.Settings(),
                        rng=random.Random(0))


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("value,expected", [
    ("yes", True), ("YES", True), (" Yes ", True), (True, True), ("true", True), ("TRUE", True), (1, True),
    ("1", True), ("no", False), ("No", False), (False, False), ("false", False), (0, False), ("0", False),
    (None, None), ("", None),
])
def test_flags_accept_every_documented_form(value, expected):
    assert d.parse_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, [], {}])
def test_other_flag_values_are_errors(value):
    with pytest.raises(ValueError, match="must be yes or no"):
        d.parse_flag(value, "upscale")


def test_numbers_as_strings_ints_or_floats():
    req = d.parse_request({"width": "512", "height": 768.0, "samples": " 2 ", "guidance_scale": "7.5",
                           "num_inference_steps": 20, "clip_skip": "2", "seed": "123"})
    assert (req.width, req.height, req.samples, req.guidance_scale, req.num_inference_steps, req.clip_skip,
            req.seed) == (512, 768, 2, 7.5, 20, 2, 123)
    for field, value, message in (("width", "5.5", "whole number"), ("samples", "two", "must be a number"),
                                  ("width", True, "must be a number"), ("guidance_scale", "nan", "must be a number")):
        with pytest.raises(InvalidRequest, match=f"{field} .*{message}"):
            d.parse_request({field: value})


@pytest.mark.parametrize("seed", [None, "", -1, "-1"])
def test_null_empty_and_minus_one_seeds_are_random(seed):
    assert d.parse_request({"seed": seed}).seed is None


def test_nulls_mean_defaults_and_unknown_fields_are_listed():
    p = plan(width=None, samples=None, scheduler=None, negative_prompt=None, other="x")
    assert (p.job.width, p.job.batch_size, p.job.sampler, p.job.negative_prompt) == (
        512, 1, "UniPCMultistepScheduler", "")
    assert p.meta["ignored_fields"] == ["other"]


def test_check_messages():
    def message(**body):
        req = d.parse_request({"prompt": "a cat", "model_id": "m", **body})
        with pytest.raises(InvalidRequest) as e:
            d.check(req, V6)
        return e.value.message

    assert message(prompt=None) == "prompt is required"
    assert message(model_id=None) == "model_id is required"
    assert message(samples=0) == "samples must be between 1 and 4"
    assert message(width=1100) == "width must be between 256 and 1024"
    assert message(height=500) == "height must be divisible by 8"
    assert message(guidance_scale=0.5) == "guidance_scale must be between 1 and 20"
    assert message(algorithm_type="other") == "algorithm_type must be one of none, dpmsolver+++"
    d.check(d.parse_request({"prompt": "a cat"}), d.FAMILY["v3"])  # v3 text2img has no model_id


def test_loras():
    assert d.parse_loras("a, b", "0.6,0.8") == [Lora("a", 0.6), Lora("b", 0.8)]
    assert d.parse_loras(["a"], 0.5) == [Lora("a", 0.5)]
    assert d.parse_loras("a,b", None) == [Lora("a", 1.0), Lora("b", 1.0)]
    assert d.parse_loras(None, "0.5") == []
    with pytest.raises(InvalidRequest, match="one value per lora_model"):
        d.parse_loras("a,b", "0.6")
    with pytest.raises(InvalidRequest, match="between 0.1 and 1"):
        d.parse_loras("a", "1.5")


# ------------------------------------------------------------------------------------------ request → job


def test_plan_translates_every_field_and_draws_the_seed():
    p = plan(width="768", height=512, samples="3", num_inference_steps="25", guidance_scale=5, clip_skip="1",
             scheduler="EulerDiscreteScheduler", use_karras_sigmas="yes", lora_model="x", lora_strength="0.5",
             negative_prompt="blurry", base64="yes", upscale=True, webhook="http://h/x", track_id=7, seed=None)
    job = p.job
    assert (job.width, job.height, job.batch_size, job.n_iter, job.steps, job.cfg_scale, job.clip_skip) == (
        768, 512, 3, 1, 25, 5.0, 1)
    assert (job.sampler, job.schedule, job.model, job.loras) == (
        "EulerDiscreteScheduler", "Karras", MODEL.title, [Lora("x", 0.5)])
    assert job.seed >= 0 and p.meta["seed"] == job.seed and p.meta["seeds"] == [job.seed + i for i in range(3)]
    assert job.style == "modelslab" and job.style is Style.MODELSLAB and job.prompt_weighting
    assert p.base64 and p.webhook == "http://h/x" and p.track_id == 7
    assert p.meta["use_karras_sigmas"] == "yes" and p.meta["upscale"] == "yes" and p.meta["lora"] == "x"
    assert (job.hires.width, job.hires.height, job.hires.upscaler) == (1536, 1024, "Latent")
    assert p.meta["output_width"] == 1536 and p.meta["output_height"] == 1024


def test_switches_become_the_jobs_features():
    job = plan(panorama="yes", self_attention="yes", tomesd="yes", vae="my-vae", embeddings_model="a, b",
               safety_checker="yes", multi_lingual="yes", enhance_prompt="yes", height=512, upscale="3").job
    assert (job.width, job.height, job.panorama) == (2048, 512, True)  # panorama: 4 × the height
    assert (job.hires.width, job.hires.height) == (6144, 1536)  # then upscale 3× (the engine's limits refuse it)
    assert job.sag_scale == 0.75 and job.tome_ratio == 0.5 and job.vae == "my-vae" and job.embeddings == ["a", "b"]
    assert job.safety_check and job.translate == "auto" and job.enhance_prompt
    off = plan(tomesd="no", safety_checker="no", enhance_prompt="no").job
    assert off.features_asked() == [] and off.hires is None and off.width == 512
    assert plan(panorama="yes", height=1024).job.width == 2048  # capped at [limits] max_width


@pytest.mark.parametrize("value, factor", [("yes", 2), (True, 2), ("2", 2), ("3", 3), (4, 4), ("no", 0), (None, 0)])
def test_upscale_takes_yes_no_or_a_factor(value, factor):
    p = plan(upscale=value, width=256, height=256)
    assert (p.job.hires.width if p.job.hires else 0) == 256 * factor
    with pytest.raises(InvalidRequest, match="upscale must be yes, no, 2, 3 or 4"):
        plan(upscale="5")


def test_karras_off_and_schedulers_that_cannot_run_karras():
    assert plan(use_karras_sigmas="no").job.schedule is None
    ddim = plan(scheduler="DDIMScheduler")  # karras is on by default; DDIM has no sigma flags
    assert ddim.meta["scheduler"] == "DDIMScheduler" and any("Karras" in n for n in ddim.meta["notes"])


def test_unusable_schedulers_fall_back_and_say_so():
    p = plan(scheduler="KarrasVeScheduler")
    assert p.meta["scheduler"] == "HeunDiscreteScheduler" and p.meta["scheduler_requested"] == "KarrasVeScheduler"
    with pytest.raises(InvalidRequest, match="not supported"):
        plan(scheduler="Nope")


def test_steps_capped_at_the_configured_maximum():
    p = plan(d.Settings(max_steps=10), num_inference_steps=30)
    assert p.job.steps == 10 and p.meta["steps"] == 10 and "capped at 10" in p.meta["notes"][-1]


def test_options_without_local_effect_are_listed_only_when_asked_for():
    assert plan().meta["not_applied"] == {}  # every default switch runs here
    on = plan(panorama="yes", self_attention=1, multi_lingual="true", vae="x", embeddings_model="e",
              algorithm_type="dpmsolver+++", highres_fix="yes", temp="yes").meta["not_applied"]
    assert set(on) == {"algorithm_type", "highres_fix", "temp"}


def test_infotext_is_a1111_style():
    p = plan(seed=5, negative_prompt="dog")
    result = SimpleNamespace(scheduler_class="UniPCMultistepScheduler", schedule="Karras", seeds=[5], model=MODEL,
                             prompt=None, negative_prompt=None, not_applied={})
    text = d.infotext(p.job, result)
    assert text.startswith("a cat\nNegative prompt: dog\nSteps: 20, Sampler: UniPCMultistepScheduler")
    assert "Seed: 5" in text and "Size: 512x512" in text and "Clip skip: 2" in text


def test_infotext_values_with_commas_read_back():
    """Written through backends/infotext.py: a value with a comma (or a colon) is quoted, so it parses back whole."""
    p = plan(seed=5, prompt="a cat, on a mat")
    model = ModelInfo(name="my, model: v2", title="my, model: v2", source="/m", kind="folder", hash="abc")
    result = SimpleNamespace(scheduler_class="EulerDiscreteScheduler", schedule="Automatic", seeds=[5], model=model,
                             prompt=None, negative_prompt=None, not_applied={})
    parsed = parse_generation_parameters(d.infotext(p.job, result))
    assert parsed["Model"] == "my, model: v2" and parsed["Prompt"] == "a cat, on a mat"
    assert parsed["Seed"] == "5" and parsed["Sampler"] == "EulerDiscreteScheduler" and parsed["Steps"] == "20"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512") and parsed["Model hash"] == "abc"


def test_random_seeds_are_drawn_from_the_styles_range():
    assert (d.RANDOM_SEEDS.low, d.RANDOM_SEEDS.high) == (0, 2**32 - 2)
    # the same draws as before the one seed function: randrange(2**32 - 1) with the same generator
    assert plan(seed=None).job.seed == random.Random(0).randrange(2**32 - 1)


# ------------------------------------------------------------------------------------------------ errors


def test_error_shape_and_status():
    assert d.error_response(InvalidRequest("samples must be between 1 and 4")) == (
        400, {"status": "error", "message": "samples must be between 1 and 4",
              "messege": "samples must be between 1 and 4"})
    assert d.error_response(d.InvalidKey("Invalid API key"))[0] == 401
    status, body = d.error_response(d.RateLimited("Rate limit exceeded.", retry_after=12))
    assert status == 429 and body["retry_after"] == 12
    status, body = d.error_response(QueueFull("full", retry_after=30))
    assert status == 429 and body["retry_after"] == 30
    status, body = d.error_response(RuntimeError("secret path /x"))
    assert status == 500 and "secret" not in body["message"]
    assert d.error_response(ModelNotFound("Model not found: x"), always_200=True)[0] == 200


def test_settings_from_config():
    s = d.Settings.from_config({"modelslab": {"sync_wait": 0, "webhook_hosts": "hooks.local", "max_queued": "7",
                                              "public_url": "https://sd.example/"}})
    assert (s.sync_wait, s.webhook_hosts, s.max_queued, s.public_url) == (0, ["hooks.local"], 7,
                                                                           "https://sd.example")
    assert d.Settings.from_config({}).sync_wait == 20 and d.Settings.from_config(None).webhook_hosts == []
    for bad in ({"sync_wait": -1}, {"max_queued": 0}, {"max_steps": "many"}):
        with pytest.raises(ConfigError):
            d.Settings.from_config({"modelslab": bad})


def test_webhook_hosts_must_be_allowed():
    assert webhook_problem("http://127.0.0.1:9/x", ["127.0.0.1"]) is None
    assert webhook_problem("https://Hooks.Example/x", ["hooks.example"]) is None
    assert webhook_problem("https://anything/x", ["*"]) is None
    assert "not allowed (allowed: none" in webhook_problem("http://example.com/x", [])
    assert "http(s) URL" in webhook_problem("file:///etc/passwd", ["*"])


def test_webhook_payloads():
    record = Record(id=3, fetch_path="/f", links=["u"], meta={"seed": 1}, job=Job(), track_id="t")
    record.status, record.error = "failed", GenerationFailed("boom")
    assert d.webhook_payload(record) == {"status": "failed", "id": 3, "message": "boom", "messege": "boom",
                                         "track_id": "t"}
    record.status, record.response = "success", {"output": ["u"], "generationTime": 1.5, "meta": {"seed": 1}}
    assert d.webhook_payload(record) == {"status": "success", "id": 3, "output": ["u"], "generationTime": 1.5,
                                         "track_id": "t", "meta": {"seed": 1}}


def test_store_expiry_and_eta():
    store = JobStore(expiry_s=10)
    a = Record(id=store.new_id(), fetch_path="/f", links=[], meta={}, job=Job(steps=10))
    b = Record(id=store.new_id(), fetch_path="/f", links=[], meta={}, job=Job(steps=10))
    assert b.id == a.id + 1 and a.id > 0
    store.add(a)
    store.add(b)
    a.status, a.finished = "success", 100.0
    assert store.in_flight() == 1
    store.sweep(now=105)
    assert store.get(a.id) is a or store.get(a.id) is None  # get() sweeps with the real clock
    store.sweep(now=200)
    assert store.records() == [b]
    ticket = SimpleNamespace(job=b.job, done=lambda: False, progress=SimpleNamespace(fraction=0.5))
    b.ticket = ticket
    queue = SimpleNamespace(current=ticket, pending=lambda: [])
    store.rate = 1.0
    assert store.eta(b, queue) == 5.0  # half of 10 units left
    store.observe(Job(steps=10), 2.0)
    assert store.rate == pytest.approx(0.7 + 0.3 * 0.2)


class CatalogService(Service):
    """A typed fake: the part of the Service the ModelsLab dialect's model lookup uses (the local catalog only)."""

    def __init__(self, models: ModelCatalog, outputs: Path, demo: bool = False):
        self.models = models
        self.config = Config(outputs_dir=outputs)
        self.keys = ApiKeys({})
        self.is_demo = demo

    @property
    def demo(self) -> bool:
        return self.is_demo

    def resolve_model(self, name: str | None, route: Route) -> ModelInfo:
        return self.models.resolve(name)


def test_unknown_model_ids_outside_demo_are_model_not_found(model_manager, tmp_path):
    service = CatalogService(model_manager, tmp_path)
    api = d.ModelslabDialect(service)
    call = Call()
    with pytest.raises(ModelNotFound, match="^Model not found: sd15$"):
        api._resolve_model("sd15", call)
    assert api._resolve_model("tiny-sd1", call)[0].name == "tiny-sd1"
    service.is_demo = True
    info, notes = api._resolve_model("juggernaut-xl", call)
    assert info.name == "tiny-sdxl" and "--demo ran tiny-sdxl" in notes[0]


# ================================================================================= the reverse pair (relay)


def test_job_to_request_is_what_the_sdk_sends():
    job = Job(prompt="a fox", negative_prompt="blur", width=768, height=512, steps=25, cfg_scale=6.5,
              sampler="DPMSolverMultistepScheduler", schedule="Karras", seed=42, batch_size=2, model="sdxl",
              clip_skip=1, loras=[Lora("a", 0.5), Lora("b", 1.0)])
    planned = d.job_to_request(job)
    (up,) = planned.requests
    assert up.method == "POST" and up.path == "/api/v6/images/text2img" and up.json["key"] is None
    assert up.key_in_body
    body = up.json
    assert (body["model_id"], body["width"], body["height"], body["samples"], body["num_inference_steps"],
            body["guidance_scale"], body["seed"], body["clip_skip"]) == ("sdxl", 768, 512, 2, 25, 6.5, 42, 1)
    assert body["scheduler"] == "DPMSolverMultistepScheduler" and body["use_karras_sigmas"] == "yes"
    assert body["lora_model"] == "a,b" and body["lora_strength"] == "0.5,1"
    assert body["enhance_prompt"] == body["tomesd"] == body["upscale"] == body["safety_checker"] == "no"
    assert planned.dropped == [] and planned.notes == []
    job.tome_ratio, job.safety_check, job.hires, job.vae = 0.5, True, Hires(1536, 1024), "v"
    body = d.job_to_request(job).requests[0].json
    assert (body["tomesd"], body["safety_checker"], body["upscale"], body["vae"]) == ("yes", "yes", "yes", "v")


def test_job_to_request_reports_what_it_cannot_carry():
    job = Job(prompt="x", sampler="Euler a", schedule="Exponential", seed=-1, eta=0.5, prompt_weighting=False,
              init_image=Image.new("RGB", (8, 8)), preview_every=2)
    planned = d.job_to_request(job, family="v3", base64=True)
    (up,) = planned.requests
    assert up.path == "/api/v3/text2img" and "model_id" not in up.json and up.json["seed"] is None
    assert up.json["scheduler"] == "EulerAncestralDiscreteScheduler" and up.json["base64"] == "yes"
    assert set(planned.dropped) == {"schedule", "eta", "prompt_weighting", "init_image", "preview_every"}
    assert "sent as scheduler EulerAncestralDiscreteScheduler" in planned.notes[0]
    with pytest.raises(InvalidRequest, match="at most 4"):
        d.job_to_request(Job(prompt="x", batch_size=3, n_iter=2))


def test_a_request_survives_the_round_trip_through_a_job():
    """ModelsLab body → Job → ModelsLab body (what the relay sends) → Job: the same image would be made."""
    first = plan(width=640, height=384, samples=2, num_inference_steps=12, guidance_scale=4, seed=99, clip_skip=1,
                 scheduler="HeunDiscreteScheduler", use_karras_sigmas="no", negative_prompt="ugly").job
    body = d.job_to_request(first, model_id="sd15").requests[0].json
    second = plan(**{k: v for k, v in body.items() if k != "key"}).job
    keys = ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "sampler", "schedule", "seed",
            "batch_size", "n_iter", "clip_skip", "loras", "prompt_weighting")
    assert {k: getattr(first, k) for k in keys} == {k: getattr(second, k) for k in keys}


def test_parse_success_processing_and_fetch():
    done = d.parse_response(200, {"status": "success", "id": 5, "output": ["https://cdn/g/a-0.png"],
                                  "generationTime": 2.5, "meta": {"seed": 11}})
    assert isinstance(done, d.Finished) and done.output == ["https://cdn/g/a-0.png"] and done.generation_time == 2.5
    # the legacy M3 shape: `messege`, output "" and no future_links
    pending = d.parse_response(200, {"status": "processing", "eta": "12.5", "messege": "Try...", "output": "",
                                     "fetch_result": "https://gw.example/sd/api/v3/fetch/77", "id": 77})
    assert isinstance(pending, d.Pending) and pending.eta == 12.5 and pending.future_links == []
    under = d.fetch_request(pending, base_url="https://gw.example/sd")
    assert under.path == "/api/v3/fetch/77" and under.json == {"key": None} and under.key_in_body
    foreign = d.fetch_request(pending, base_url="https://other.example")
    assert foreign.path == "/api/v6/images/fetch/77"  # never post the key to a host we were not given
    assert d.fetch_request(9, family="enterprise").path == "/api/v1/enterprise/fetch/9"


# Every error answer (the legacy HTTP 200 with `status: error|failed` included) is raised by the gateway client as
# the one UpstreamError (backends/remote/errors.py) before the reverse pair reads anything; a ModelsLab caller
# gets it in ModelsLab's shape. (The dialect's own copy of that parser, which the relay never reached, is gone.)
@pytest.mark.parametrize("status,body,message", [
    (400, {"status": "error", "message": "samples must be between 1 and 4"}, "samples must be between 1 and 4"),
    (200, {"status": "error", "messege": "width must be between 256 and 1024"}, "width must be between 256 and 1024"),
    (401, {"status": "error", "message": "Invalid API key"}, "Invalid API key"),
    (200, {"status": "error", "message": "Invalid API key"}, "Invalid API key"),
    (429, {"status": "error", "message": "Rate limit exceeded.", "retry_after": 30}, "Rate limit exceeded."),
    (200, {"status": "error", "message": "Model not found: x"}, "Model not found: x"),
    (402, {"status": "error", "message": "Insufficient credits"}, "Insufficient credits"),
    (403, {"status": "error", "message": "plan"}, "plan"),
    (404, {"status": "error", "message": "Request not found"}, "Request not found"),
    (200, {"status": "failed", "id": 3, "message": "out of memory"}, "out of memory"),
    (503, {"status": "error", "message": "busy"}, "busy"),
    (500, {"status": "error", "message": "oops"}, "oops"),
    (401, {"error": {"message": "invalid token (request id: 1)", "type": "new_api_error"}}, "invalid token"),
    (502, "<html>bad gateway</html>", "bad gateway"),
])
def test_every_error_shape_becomes_a_clear_error(status, body, message):
    from backends.remote.errors import UpstreamError, error_in_success

    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    parsed = error_in_success(content) if status == 200 else None  # what the client does with a 2xx
    assert (parsed is not None) == (status == 200)
    error = UpstreamError.from_response("gw", status, {}, content, retryable=False, parsed=parsed)
    assert error.details["upstream_status"] == status and message in error.message
    if isinstance(body, dict) and body.get("status") in ("error", "failed"):
        assert error.shape == "modelslab"
    if status == 429:
        assert error.retry_after == 30 and error.status == 429
    code, shown = d.error_response(error)
    assert code == error.status >= 400 and shown == {"status": "error", "message": error.message,
                                                      "messege": error.message}


def test_garbage_and_unknown_statuses():
    with pytest.raises(GenerationFailed, match="not a JSON object"):
        d.parse_response(200, b"\x89PNG garbage")
    with pytest.raises(GenerationFailed, match="unexpected ModelsLab status"):
        d.parse_response(200, {"status": "queued?"})


def _png_b64(size=(8, 8)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_decode_output_entries():
    assert d.decode_output("https://cdn/x.png") is None
    assert d.decode_output(_png_b64()).size == (8, 8)
    assert d.decode_output("data:image/png;base64," + _png_b64((4, 4))).size == (4, 4)
    with pytest.raises(GenerationFailed):
        d.decode_output("not an image")


def test_result_from_response():
    job = Job(prompt="x", seed=7, batch_size=2)
    images = [Image.new("RGB", (8, 8))] * 2
    finished = d.Finished(id=1, output=["u0", "u1"], generation_time=3.0,
                          meta={"seed": 7, "scheduler": "EulerDiscreteScheduler", "use_karras_sigmas": "yes",
                                "model_id": "sdxl", "notes": ["n"], "not_applied": {"tomesd": "why"}})
    result = d.result_from_response(job, finished, images)
    assert result.seeds == [7, 8] and result.scheduler_class == "EulerDiscreteScheduler"
    assert result.schedule == "Karras" and result.model.name == "sdxl" and result.timings["total"] == 3.0
    assert result.notes == ["n", "tomesd not applied by the gateway: why"]
    finished.meta["seeds"] = [100, 200]
    assert d.result_from_response(job, finished, images).seeds == [100, 200]


# ================================================================== the relay's side: polling, downloads, forwarding


class Unreadable(GenerationFailed):
    status = 502


class TimedOut(GenerationFailed):
    status = 504


class FakeGateway:
    """A typed fake of backends/upstream.py `Gateway`: scripted answers, recorded requests, no real waiting."""

    name = "gw"
    base_url = "https://gw.test/sd"
    poll_interval = 0.25
    deadline_s = 60.0

    def __init__(self, answers: list[dict], files: dict[str, bytes] | None = None, left: float = 60.0):
        self.answers = list(answers)
        self.files = files or {}
        self.left = left
        self.sent: list = []
        self.slept: list[float] = []
        self.downloaded: list[str] = []

    def seconds_left(self) -> float:
        return self.left

    async def send(self, request):
        from backends.upstream import UpstreamAnswer

        self.sent.append(request)
        return UpstreamAnswer(200, {"content-type": "application/json"}, json.dumps(self.answers.pop(0)).encode())

    async def download(self, url: str) -> bytes:
        self.downloaded.append(url)
        return self.files[url]

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.left -= seconds

    def unreadable(self, message: str):
        return Unreadable(f"gateway gw: {message}")

    def timed_out(self, message: str):
        return TimedOut(f"gateway gw: {message}")

    def redact(self, content: bytes) -> bytes:
        return content.replace(b"gw-key", b"<redacted>")


def _png(size=(8, 8), fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "blue").save(out, format=fmt)
    return out.getvalue()


def _dialect(model_manager, tmp_path) -> d.ModelslabDialect:
    return d.ModelslabDialect(CatalogService(model_manager, tmp_path))


PROCESSING = {"status": "processing", "id": 9, "eta": 2, "fetch_result": "https://gw.test/sd/api/v6/images/fetch/9",
              "future_links": ["https://cdn.test/g/a-0.png"], "output": [], "messege": "later", "tip_1": "t",
              "meta": {"seed": 7}}


def test_call_upstream_polls_to_success_and_reads_urls_and_base64(model_manager, tmp_path):
    url = "https://cdn.test/g/a-0.png"
    done = {"status": "success", "id": 9, "generationTime": 1.5, "output": [url, _png_b64((4, 4))],
            "meta": {"seeds": [7, 8], "scheduler": "EulerDiscreteScheduler", "use_karras_sigmas": "no"}}
    gateway = FakeGateway([PROCESSING, PROCESSING, done], {url: _png((8, 8))})
    job = Job(prompt="x", seed=7, batch_size=2, eta=0.3, model="sd15", style=Style.MODELSLAB)
    result = asyncio.run(_dialect(model_manager, tmp_path).call_upstream(job, gateway))
    assert [r.path for r in gateway.sent] == ["/api/v6/images/text2img", "/api/v6/images/fetch/9",
                                              "/api/v6/images/fetch/9"]
    assert all(r.key_in_body and r.json["key"] is None for r in gateway.sent)
    assert gateway.sent[0].json["model_id"] == "sd15" and gateway.sent[0].json["samples"] == 2
    assert gateway.slept == [2, 0.25]  # first max(eta, poll_interval), then poll_interval
    assert gateway.downloaded == [url]
    assert isinstance(result, Result) and result.seeds == [7, 8] and result.schedule == "Automatic"
    assert [im.size for im in result.images] == [(8, 8), (4, 4)] and result.timings["total"] == 1.5
    assert result.dropped == ["eta"]


def test_polling_gives_up_before_the_deadline_would_pass(model_manager, tmp_path):
    gateway = FakeGateway([PROCESSING], left=1.0)
    with pytest.raises(TimedOut, match="request 9 still processing after 0 polls; the deadline of 60 s would pass"):
        asyncio.run(_dialect(model_manager, tmp_path).call_upstream(Job(prompt="x"), gateway))
    assert gateway.slept == []


def test_a_foreign_fetch_result_is_not_followed(model_manager, tmp_path):
    foreign = {**PROCESSING, "eta": 0, "fetch_result": "https://elsewhere.test/api/v6/images/fetch/9"}
    done = {"status": "success", "id": 9, "output": [_png_b64()], "meta": {"seed": 1}}
    gateway = FakeGateway([foreign, done])
    asyncio.run(_dialect(model_manager, tmp_path).call_upstream(Job(prompt="x"), gateway))
    assert gateway.sent[1].path == "/api/v6/images/fetch/9" and gateway.slept == [0.25]


def test_unreadable_outputs_are_the_gateways_fault(model_manager, tmp_path):
    url = "https://cdn.test/g/a-0.png"
    gateway = FakeGateway([{"status": "success", "id": 1, "output": [url], "meta": {}}], {url: b"<html>"})
    with pytest.raises(Unreadable, match="output 0 is not an image"):
        asyncio.run(_dialect(model_manager, tmp_path).call_upstream(Job(prompt="x"), gateway))


def test_finish_forward_passes_other_answers_back(model_manager, tmp_path):
    from backends.upstream import ForwardRequest, UpstreamAnswer

    dialect = _dialect(model_manager, tmp_path)
    request = ForwardRequest("POST", "/api/v1/enterprise/system_details", "", {}, b"{}", "http://us.test/")
    details = UpstreamAnswer(200, {}, json.dumps({"status": "success", "message": "gw"}).encode())
    assert asyncio.run(dialect.finish_forward(details, FakeGateway([]), request)) is None
    with pytest.raises(Unreadable, match="not a JSON object"):
        asyncio.run(dialect.finish_forward(UpstreamAnswer(200, {}, b"[1]"), FakeGateway([]), request))


def test_finish_forward_polls_and_serves_the_outputs_itself(model_manager, tmp_path):
    from backends.upstream import ForwardRequest, UpstreamAnswer

    dialect = _dialect(model_manager, tmp_path)
    url = "https://cdn.test/g/a-0.png"
    done = {"status": "success", "id": 9, "generationTime": 2.0, "output": [url],
            "meta": {"seed": 7, "note": "gw-key"}}
    gateway = FakeGateway([done], {url: _png((8, 8), "JPEG")})
    request = ForwardRequest("POST", "/api/v6/images/text2img", "", {}, b"{}", "http://us.test/")
    first = UpstreamAnswer(200, {}, json.dumps(PROCESSING).encode())
    forwarded = asyncio.run(dialect.finish_forward(first, gateway, request))
    assert forwarded.status == 200 and forwarded.headers == {"content-type": "application/json"}
    reply = json.loads(forwarded.content)
    assert reply["status"] == "success" and reply["id"] == 9 and reply["generationTime"] == 2.0
    assert reply["meta"] == {"seed": 7, "note": "<redacted>"}
    for stale in ("fetch_result", "future_links", "eta", "messege", "message", "tip_1"):
        assert stale not in reply
    (served,) = reply["output"]
    assert reply["proxy_links"] == [served] and served.startswith("http://us.test/generations/")
    path = dialect.generation_file(served.rsplit("/", 1)[1])
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")  # a JPEG output, served as PNG
    assert Image.open(path).size == (8, 8)

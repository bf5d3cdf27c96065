"""A parsed txt2img/img2img request → the Jobs to run and what the response needs to describe them: the
request's infotext and options applied, prompt styles, samplers, hires fix's second pass, img2img's init images,
masks and inpainting (docs/reference/a1111_api.md §1, docs/reference/a1111_features.md §4)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFilter

from ...images import decode_base64_image
from ...job import InvalidRequest, Job
from ...samplers import resolve_sampler
from ...seeds import SeedRange
from ..base import Call
from .errors import InitImageNotFound, ScriptNotFound
from .imaging import LATENT_UPSCALE_MODES, UPSCALERS, fill_masked, read_mask, resize_image
from .infotext_fields import fields_from_infotext
from .models import Img2ImgRequest, Txt2ImgRequest

if TYPE_CHECKING:
    from .api import A1111Dialect

RANDOM_SEEDS = SeedRange(0, 4294967293)  # A1111 draws random seeds below 4294967294
TASK_ID = re.compile(r"[\w().:-]{1,128}")  # `force_task_id`: A1111's own look like "task(0a1b2c3d4e5f6a7)"
DEFAULT_SAMPLER = "DPM++ 2M"  # A1111 1.9+: samplers[0], used when both sampler_name and sampler_index are null
HIRES_DEFAULT_DENOISING = 0.7  # A1111's UI default; the API's null would fail there


@dataclass
class Hires:
    """Hires fix's second pass: the img2img job each first-pass image goes through, after `resample`."""

    job: Job
    resample: Any


@dataclass
class Plan:
    """A request translated: the jobs to run and what the response needs to describe them."""

    task: str  # "txt2img" | "img2img"
    jobs: list[Job]
    prompt: str
    negative_prompt: str
    subseed: int
    width: int
    height: int
    clip_skip: int
    opts: dict[str, Any]
    extra: dict[str, Any]  # extra_generation_params known before running
    denoising_strength: float | None
    started: float
    hires: Hires | None = None
    originals: list[Image.Image] = field(default_factory=list)  # img2img: resized inits, for the inpaint overlay
    overlay_mask: Image.Image | None = None


def derive(job: Job, **changes) -> Job:
    """A copy of `job` for another pass or image; it gets its own id (the queue and progress key on it)."""
    return replace(job, id=uuid.uuid4().hex[:12], **changes)


def floor8(value: int | None, name: str) -> int:
    if value is None:
        raise InvalidRequest(f"{name} must not be null")
    # A1111 floors the latent size to /8 without complaint; the image then has the floored size.
    return int(value) // 8 * 8


def prepare(api: A1111Dialect, req: Txt2ImgRequest | Img2ImgRequest, call: Call, started: float) -> Plan:
    """Everything before the queue (it may hash model files and decode images: run it off the event loop)."""
    txt2img = isinstance(req, Txt2ImgRequest)
    apply_infotext(api, req, call)
    check_scripts(api, req)
    opts, overrides = api.effective_options(req.override_settings, call)
    plan = (plan_txt2img if txt2img else plan_img2img)(api, req, opts, overrides, call, started)
    if overrides and req.override_settings_restore_afterwards is False:
        api.apply_options(overrides)
    return plan


def apply_infotext(api: A1111Dialect, req, call: Call) -> None:
    """request.infotext (1.8+): fills every field the request did not set, as A1111 does."""
    if not req.infotext:
        return
    task = "txt2img" if isinstance(req, Txt2ImgRequest) else "img2img"
    data = fields_from_infotext(req.infotext, task, lambda name: api.resolve_model(name, call).title)
    model = data.pop("model", None)
    pasted = data.pop("override_settings", {})
    for name, value in data.items():
        if name not in req.model_fields_set and (name != "enable_hr" or value):
            setattr(req, name, value)
    settings = dict(req.override_settings or {})
    for option, value in pasted.items():
        settings.setdefault(option, value)
    if model is not None:
        settings.setdefault("sd_model_checkpoint", model)
    req.override_settings = settings or req.override_settings


def check_scripts(api: A1111Dialect, req) -> None:
    if req.script_name:
        raise ScriptNotFound(f"Script '{req.script_name}' not found")
    for title in req.alwayson_scripts or {}:
        if api.strict_scripts:
            raise ScriptNotFound(f"always on script {title} not found")
        api.warn_once(f"script:{title}", "alwayson_scripts %r is not available here; ignored", title)


def model_for(api: A1111Dialect, req, overrides: dict[str, Any], call: Call) -> str | None:
    if "sd_model_checkpoint" in overrides:
        return overrides["sd_model_checkpoint"]
    if req.model:
        return api.resolve_model(req.model, call).title
    return None


def base_job(api: A1111Dialect, req, opts: dict[str, Any], overrides: dict[str, Any], task: str,
             call: Call) -> tuple[Job, dict]:
    prompt, negative = api.styles.apply(req.prompt or "", req.negative_prompt or "", req.styles)
    sampler = req.sampler_name or req.sampler_index or DEFAULT_SAMPLER
    resolve_sampler(sampler, req.scheduler)  # fail before queueing: unknown names list the valid ones
    preview_every = int(opts["show_progress_every_n_steps"]) if opts["live_previews_enable"] else 0
    extra: dict[str, Any] = {}
    if opts["emphasis"] == "None":
        extra["Emphasis"] = "None"
    if req.subseed_strength:
        api.warn_once("subseed", "variation seeds (subseed_strength) are not supported; ignored")
    batch_size, n_iter = req.batch_size or 1, req.n_iter or 1
    job = Job(
        prompt=prompt,
        negative_prompt=negative,
        width=floor8(req.width, "width"),
        height=floor8(req.height, "height"),
        steps=req.steps if req.steps is not None else 50,
        cfg_scale=req.cfg_scale if req.cfg_scale is not None else 7.0,
        sampler=sampler,
        schedule=req.scheduler or None,
        seed=RANDOM_SEEDS.pick(req.seed, batch_size * n_iter, random_below=0),
        batch_size=batch_size,
        n_iter=n_iter,
        model=model_for(api, req, overrides, call),
        clip_skip=int(opts["CLIP_stop_at_last_layers"] or 1),
        eta=req.eta if req.eta is not None else float(opts["eta_ddim"]),
        prompt_weighting=opts["emphasis"] != "None",
        preview_every=max(0, preview_every),
        extra={"task": task},
    )
    if req.force_task_id:  # the id /internal/progress and /jobs/{id} know it by (A1111 1.10)
        if not TASK_ID.fullmatch(req.force_task_id):
            raise InvalidRequest("force_task_id must be 1-128 letters, digits or ()._:- characters",
                                 details={"field": "force_task_id"})
        job.id = req.force_task_id
    return api.job_for_route(job, call), extra


def _plan(task: str, job: Job, req, opts, extra, denoising, started, **more) -> Plan:
    return Plan(task=task, jobs=[job], prompt=job.prompt, negative_prompt=job.negative_prompt,
                subseed=RANDOM_SEEDS.pick(req.subseed, random_below=0), width=job.width, height=job.height,
                clip_skip=job.clip_skip, opts=opts, extra=extra, denoising_strength=denoising, started=started,
                **more)


def plan_txt2img(api: A1111Dialect, req: Txt2ImgRequest, opts, overrides, call: Call, started: float) -> Plan:
    job, extra = base_job(api, req, opts, overrides, "txt2img", call)
    plan = _plan("txt2img", job, req, opts, extra, req.denoising_strength, started)
    if req.enable_hr:
        plan_hires(api, req, plan, call)
    api.service.validate(job)
    return plan


def _hires_target(req: Txt2ImgRequest, job: Job, plan: Plan, extra: dict[str, Any]) -> tuple[int, int]:
    if req.firstphase_width or req.firstphase_height:  # the pre-1.0 form: width/height are the final size
        target_w, target_h = job.width, job.height
        job.width = floor8(req.firstphase_width or job.width, "firstphase_width")
        job.height = floor8(req.firstphase_height or job.height, "firstphase_height")
        plan.width, plan.height = job.width, job.height
        extra["Hires resize"] = f"{target_w}x{target_h}"
        return target_w, target_h
    if not req.hr_resize_x and not req.hr_resize_y:
        scale = req.hr_scale if req.hr_scale is not None else 2.0
        extra["Hires upscale"] = scale
        return int(job.width * scale), int(job.height * scale)
    rx, ry = req.hr_resize_x or 0, req.hr_resize_y or 0
    extra["Hires resize"] = f"{rx}x{ry}"
    if not ry:
        return rx, rx * job.height // job.width
    if not rx:
        return ry * job.width // job.height, ry
    return rx, ry


def plan_hires(api: A1111Dialect, req: Txt2ImgRequest, plan: Plan, call: Call) -> None:
    """Hires fix as A1111 does it, in pixel space: a first pass at the base size, an upscale, then an
    img2img pass per image with that image's seed."""
    job = plan.jobs[0]
    upscaler = req.hr_upscaler or "Latent"
    if upscaler not in LATENT_UPSCALE_MODES and upscaler not in UPSCALERS:
        raise InvalidRequest(f"could not find upscaler named {upscaler}", details={"hr_upscaler": upscaler})
    extra: dict[str, Any] = {}
    target_w, target_h = _hires_target(req, job, plan, extra)
    steps = req.hr_second_pass_steps or job.steps
    if req.hr_second_pass_steps:
        extra["Hires steps"] = req.hr_second_pass_steps
    extra["Hires upscaler"] = upscaler
    sampler, schedule = job.sampler, job.schedule
    if req.hr_sampler_name and req.hr_sampler_name != "Use same sampler":
        sampler = req.hr_sampler_name
        extra["Hires sampler"] = sampler
    if req.hr_scheduler and req.hr_scheduler != "Use same scheduler":
        schedule = req.hr_scheduler
        extra["Hires schedule type"] = schedule
    resolve_sampler(sampler, schedule)
    model = job.model
    if req.hr_checkpoint_name and req.hr_checkpoint_name != "Use same checkpoint":
        model = api.resolve_model(req.hr_checkpoint_name, call).title
        extra["Hires checkpoint"] = req.hr_checkpoint_name
    prompt, negative = job.prompt, job.negative_prompt
    if req.hr_prompt:
        prompt = api.styles.apply(req.hr_prompt, "", req.styles)[0]
        extra["Hires prompt"] = prompt
    if req.hr_negative_prompt:
        negative = api.styles.apply("", req.hr_negative_prompt, req.styles)[1]
        extra["Hires negative prompt"] = negative
    denoising = req.denoising_strength if req.denoising_strength is not None else HIRES_DEFAULT_DENOISING
    plan.denoising_strength = denoising
    plan.extra = {"Denoising strength": denoising, **plan.extra, **extra}
    second = derive(
        job, prompt=prompt, negative_prompt=negative, width=floor8(target_w, "hires width"),
        height=floor8(target_h, "hires height"), steps=steps, sampler=sampler, schedule=schedule, model=model,
        batch_size=1, n_iter=1, denoising_strength=denoising, extra={"task": "txt2img", "hires": True},
    )
    api.service.validate(second)
    filt = LATENT_UPSCALE_MODES.get(upscaler) or UPSCALERS.get(upscaler) or Image.Resampling.LANCZOS
    plan.hires = Hires(second, filt)


def _mask(api: A1111Dialect, req: Img2ImgRequest, job: Job, mode: int, extra: dict[str, Any]) -> Image.Image:
    mask = read_mask(decode_base64_image(req.mask, "mask", api.service.config.limits), bool(req.inpainting_mask_invert))
    mask = resize_image(mode, mask, job.width, job.height)
    blur_x = req.mask_blur if req.mask_blur is not None else (req.mask_blur_x or 0)
    blur_y = req.mask_blur if req.mask_blur is not None else (req.mask_blur_y or 0)
    if blur_x > 0 or blur_y > 0:
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
        if blur_x == blur_y:
            extra["Mask blur"] = blur_x
    if req.inpaint_full_res and mask.getbbox() is not None:
        # "Only masked": work at full resolution on the mask's box plus padding, then paste back.
        job.mask_crop_padding = max(0, int(req.inpaint_full_res_padding or 0))
        extra["Inpaint area"] = "Only masked"
        extra["Masked area padding"] = job.mask_crop_padding
    if req.inpainting_fill in (2, 3):
        api.warn_once("fill", "inpainting_fill latent noise/nothing are not supported; using the original")
    return mask


def plan_img2img(api: A1111Dialect, req: Img2ImgRequest, opts, overrides, call: Call, started: float) -> Plan:
    if not req.init_images:
        raise InitImageNotFound("Init image not found")
    job, extra = base_job(api, req, opts, overrides, "img2img", call)
    limits = api.service.config.limits
    inits = [decode_base64_image(data, f"init_images[{i}]", limits) for i, data in enumerate(req.init_images)]
    mode = req.resize_mode or 0
    originals = [resize_image(mode, im.convert("RGB"), job.width, job.height) for im in inits]
    denoising = req.denoising_strength if req.denoising_strength is not None else 0.75
    if not 0 <= denoising <= 1:
        raise InvalidRequest(f"denoising_strength must be between 0 and 1 (got {denoising})")
    extra = {"Denoising strength": denoising, **extra}
    mask = _mask(api, req, job, mode, extra) if req.mask else None
    inputs = [fill_masked(im, mask) if mask is not None and req.inpainting_fill == 0 else im for im in originals]
    job.init_image, job.mask, job.denoising_strength = inputs[0], mask, denoising
    jobs = [job]
    if len(inputs) > 1:
        # A1111 spreads several init images over one batch: image k of every batch uses init k.
        if len(inputs) > job.batch_size:
            raise InvalidRequest(
                f"{len(inputs)} init images but batch_size is {job.batch_size}; send at most batch_size images"
            )
        count = len(inputs)
        jobs = [
            derive(job, init_image=inputs[k], seed=job.seed + b * count + k, batch_size=1, n_iter=1)
            for b in range(job.n_iter)
            for k in range(count)
        ]
        originals = [originals[k] for _ in range(job.n_iter) for k in range(count)]
    else:
        originals = [originals[0]] * job.image_count
    api.service.validate(job)
    plan = _plan("img2img", job, req, opts, extra, denoising, started, originals=originals,
                 overlay_mask=mask if opts["overlay_inpaint"] else None)
    plan.jobs = jobs
    return plan

"""A parsed txt2img/img2img request → the Jobs to run and what the response needs to describe them: the
request's infotext and options applied, prompt styles, samplers, variation seeds, tiling, VAE, refiner, hires fix
(one Job with `Job.hires`: the engine's second pass), img2img's init images, masks and inpainting
(docs/reference/a1111_api.md §1, docs/reference/a1111_features.md §2, §4-§9)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFilter

from ...images import decode_base64_image
from ...infotext import checkpoint_short_name
from ...job import Hires, InvalidRequest, Job, ModelInfo, Refiner
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
REFINER_OFF = {"", "none"}  # refiner_checkpoint values that mean no refiner (null too)
SAME = {"hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": "Use same sampler",
        "hr_scheduler": "Use same scheduler"}  # the UI's "as the first pass" choices, accepted as null
# No face-restoration model is shipped: a request asking for one is told so (info notes, infotext), never silently.
FACE_RESTORATION_NOTE = "restore_faces: no face restoration model is installed here; faces were not restored"
FACE_RESTORATION_INFOTEXT = "not applied (no model installed)"


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
    notes: list[str] = field(default_factory=list)  # what the response says ran differently (demo models, ...)
    restore_faces: bool = False  # asked for, and not applied (no model)
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
    notes: list[str] = []
    opts, overrides = api.effective_options(req.override_settings, call)
    plan = (plan_txt2img if txt2img else plan_img2img)(api, req, opts, overrides, call, started, notes)
    if overrides and req.override_settings_restore_afterwards is False:
        api.apply_options(overrides)
    return plan


def apply_infotext(api: A1111Dialect, req, call: Call) -> None:
    """request.infotext (1.8+): fills every field the request did not set, as A1111 does."""
    if not req.infotext:
        return
    task = "txt2img" if isinstance(req, Txt2ImgRequest) else "img2img"
    data = fields_from_infotext(req.infotext, task, lambda name: api.resolve_model(name, call).title)
    # A1111's quirk (§2): this field reads `Seed resize from: WxH` as h=W, w=H (the UI's paste reads it right)
    if "seed_resize_from_w" in data and "seed_resize_from_h" in data:
        data["seed_resize_from_w"], data["seed_resize_from_h"] = data["seed_resize_from_h"], data["seed_resize_from_w"]
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
    # A known script_name never gets here: A1111Dialect.run hands it to its script (scripts/), whose runs
    # come back without one.
    if req.script_name:
        raise ScriptNotFound(f"Script '{req.script_name}' not found")
    for title in req.alwayson_scripts or {}:
        if api.strict_scripts:
            raise ScriptNotFound(f"always on script {title} not found")
        api.warn_once(f"script:{title}", "alwayson_scripts %r is not available here; ignored", title)


def request_model(api: A1111Dialect, name: str, call: Call, notes: list[str]) -> ModelInfo:
    """The checkpoint the reseller gateways' `model` field names. With --demo, a name that is not installed runs
    the tiny model of the family it suggests ("xl" in it: tiny-sdxl, else tiny-sd1), with a note, so their
    documented examples (`"model": "majicmixRealistic_v7"`) work on the demo; otherwise it stays a 404. A1111's own
    checkpoint fields (override_settings, hr_checkpoint_name, refiner_checkpoint) stay 404s even on the demo."""
    model, note = api.resolve_or_demo(name, call)
    if note:
        notes.append(note)
    return model


def model_for(api: A1111Dialect, req, overrides: dict[str, Any], call: Call, notes: list[str]) -> str | None:
    if "sd_model_checkpoint" in overrides:
        return overrides["sd_model_checkpoint"]
    if req.model:
        return request_model(api, req.model, call, notes).title
    return None


def refiner_for(api: A1111Dialect, req, call: Call) -> Refiner | None:
    """refiner_checkpoint / refiner_switch_at (§5): null, "" or "None" is off; a null switch point with a
    checkpoint switches at once, as A1111 does. The engine writes `Refiner` in the infotext when it switched."""
    name = (req.refiner_checkpoint or "").strip()
    if name.lower() in REFINER_OFF:
        return None
    switch_at = float(req.refiner_switch_at) if req.refiner_switch_at is not None else 0.0
    if not 0 <= switch_at <= 1:
        raise InvalidRequest(f"refiner_switch_at must be between 0 and 1 (got {switch_at})",
                             details={"field": "refiner_switch_at"})
    return Refiner(model=api.resolve_model(name, call).title, switch_at=switch_at)


def short_title(info: ModelInfo) -> str:
    """How A1111's infotext names a checkpoint other than the main one: `name [hash]`."""
    return f"{checkpoint_short_name(info)} [{info.hash}]" if info.hash else checkpoint_short_name(info)


def vae_for(sd_vae: str | None, call: Call) -> str | None:
    """`sd_vae` (§6) as the Job's VAE: "Automatic", "None" or a name, which the engine's VAE feature reads. On a
    gateway "Automatic" is whatever the gateway does by default, so it asks nothing of it (and nothing is dropped)."""
    if not sd_vae or (str(sd_vae).strip().lower() == "automatic" and not call.route.local):
        return None
    return str(sd_vae)


def strip_comments(text: str) -> str:
    """A1111's prompt comments (option `enable_prompt_comments`): from `#` to the end of its line is left out, and
    a line that held only a comment goes with it."""
    if "#" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        kept, hash_, _ = line.partition("#")
        if not hash_:
            lines.append(line)
        elif kept.strip():
            lines.append(kept.rstrip())
    return "\n".join(lines)


def base_job(api: A1111Dialect, req, opts: dict[str, Any], overrides: dict[str, Any], task: str,
             call: Call, notes: list[str]) -> tuple[Job, dict]:
    prompt, negative = api.styles.apply(req.prompt or "", req.negative_prompt or "", req.styles)
    if opts["enable_prompt_comments"]:
        prompt, negative = strip_comments(prompt), strip_comments(negative)
    sampler = req.sampler_name or req.sampler_index or DEFAULT_SAMPLER
    resolve_sampler(sampler, req.scheduler)  # fail before queueing: unknown names list the valid ones
    preview_every = int(opts["show_progress_every_n_steps"]) if opts["live_previews_enable"] else 0
    extra: dict[str, Any] = {}
    if opts["emphasis"] == "None":
        extra["Emphasis"] = "None"
    batch_size, n_iter = req.batch_size or 1, req.n_iter or 1
    resize_w, resize_h = req.seed_resize_from_w or -1, req.seed_resize_from_h or -1
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
        model=model_for(api, req, overrides, call, notes),
        clip_skip=int(opts["CLIP_stop_at_last_layers"] or 1),
        eta=req.eta if req.eta is not None else float(opts["eta_ddim"]),
        prompt_weighting=opts["emphasis"] != "None",
        preview_every=max(0, preview_every),
        # variation seeds (§2): the subseed is drawn even when unused, as A1111 reports it
        subseed=RANDOM_SEEDS.pick(req.subseed, batch_size * n_iter, random_below=0),
        subseed_strength=float(req.subseed_strength or 0.0),
        seed_resize_from=(resize_w, resize_h) if resize_w > 0 and resize_h > 0 else None,
        tiling=bool(req.tiling if req.tiling is not None else opts["tiling"]),
        vae=vae_for(opts.get("sd_vae"), call),
        refiner=refiner_for(api, req, call),
        extra={"task": task},
    )
    if req.force_task_id:  # the id /internal/progress and /jobs/{id} know it by (A1111 1.10)
        if not TASK_ID.fullmatch(req.force_task_id):
            raise InvalidRequest("force_task_id must be 1-128 letters, digits or ()._:- characters",
                                 details={"field": "force_task_id"})
        job.id = req.force_task_id
    return api.job_for_route(job, call), extra


def _plan(task: str, job: Job, req, opts, extra, denoising, started, notes, **more) -> Plan:
    restore_faces = bool(req.restore_faces if req.restore_faces is not None else opts["face_restoration"])
    return Plan(task=task, jobs=[job], prompt=job.prompt, negative_prompt=job.negative_prompt,
                subseed=job.subseed, width=job.width, height=job.height,
                clip_skip=job.clip_skip, opts=opts, extra=extra, denoising_strength=denoising, started=started,
                notes=notes + ([FACE_RESTORATION_NOTE] if restore_faces else []), restore_faces=restore_faces,
                **more)


def plan_txt2img(api: A1111Dialect, req: Txt2ImgRequest, opts, overrides, call: Call, started: float,
                 notes: list[str]) -> Plan:
    job, extra = base_job(api, req, opts, overrides, "txt2img", call, notes)
    plan = _plan("txt2img", job, req, opts, extra, req.denoising_strength, started, notes)
    if req.enable_hr:
        plan_hires(api, req, plan, call)
    elif req.firstphase_width or req.firstphase_height:  # the legacy fields set pass 1's size even without hires
        job.width = floor8(req.firstphase_width or job.width, "firstphase_width")
        job.height = floor8(req.firstphase_height or job.height, "firstphase_height")
        plan.width, plan.height = job.width, job.height
    api.service.validate(job)
    return plan


def _hires_target(req: Txt2ImgRequest, job: Job, plan: Plan) -> tuple[int, int, dict[str, Any]]:
    """The second pass's size (§4 "Target size") and its infotext key (`Hires upscale` or `Hires resize`)."""
    if req.firstphase_width or req.firstphase_height:  # the pre-1.0 form: width/height are the final size
        target_w, target_h = job.width, job.height
        job.width = floor8(req.firstphase_width or job.width, "firstphase_width")
        job.height = floor8(req.firstphase_height or job.height, "firstphase_height")
        plan.width, plan.height = job.width, job.height
        return target_w, target_h, {"Hires resize": f"{target_w}x{target_h}"}
    if not req.hr_resize_x and not req.hr_resize_y:
        scale = req.hr_scale if req.hr_scale is not None else 2.0
        return int(job.width * scale), int(job.height * scale), {"Hires upscale": scale}
    rx, ry = req.hr_resize_x or 0, req.hr_resize_y or 0
    key = {"Hires resize": f"{rx}x{ry}"}
    if not ry:
        return rx, rx * job.height // job.width, key
    if not rx:
        return ry * job.width // job.height, ry, key
    return rx, ry, key


def hires_cover(job: Job, target_w: int, target_h: int) -> tuple[int, int] | None:
    """hr_resize_x and hr_resize_y both set: A1111 scales to cover the target keeping the aspect, then centre-crops;
    None when the target already has the first pass's aspect."""
    scale = max(target_w / job.width, target_h / job.height)
    cover = (max(target_w, int(job.width * scale) // 8 * 8), max(target_h, int(job.height * scale) // 8 * 8))
    return None if cover == (target_w, target_h) else cover


def _chosen(req: Txt2ImgRequest, name: str) -> str | None:
    value = getattr(req, name)
    return None if not value or value == SAME.get(name) else value


def plan_hires(api: A1111Dialect, req: Txt2ImgRequest, plan: Plan, call: Call) -> None:
    """Hires fix as A1111 does it (§4): one Job whose `hires` the engine runs after the first pass, in latent
    space for the "Latent ..." upscalers, in pixels for the others; the response describes the first pass."""
    job = plan.jobs[0]
    upscaler = req.hr_upscaler or "Latent"
    if upscaler not in LATENT_UPSCALE_MODES and upscaler not in UPSCALERS:
        raise InvalidRequest(f"could not find upscaler named {upscaler}", details={"hr_upscaler": upscaler})
    target_w, target_h, size_key = _hires_target(req, job, plan)
    extra: dict[str, Any] = {}  # A1111's order: checkpoint, sampler, prompts, schedule, size, steps, upscaler
    model = None
    if _chosen(req, "hr_checkpoint_name"):
        info = api.resolve_model(req.hr_checkpoint_name, call)
        model = info.title
        extra["Hires checkpoint"] = short_title(info)
    sampler, schedule = _chosen(req, "hr_sampler_name"), _chosen(req, "hr_scheduler")
    if sampler:
        extra["Hires sampler"] = sampler
    resolve_sampler(sampler or job.sampler, schedule or job.schedule)
    prompt = api.styles.apply(req.hr_prompt, "", req.styles)[0] if req.hr_prompt else None
    negative = api.styles.apply("", req.hr_negative_prompt, req.styles)[1] if req.hr_negative_prompt else None
    if plan.opts["enable_prompt_comments"]:
        prompt = strip_comments(prompt) if prompt is not None else None
        negative = strip_comments(negative) if negative is not None else None
    if prompt is not None:
        extra["Hires prompt"] = prompt
    if negative is not None:
        extra["Hires negative prompt"] = negative
    if schedule:
        extra["Hires schedule type"] = schedule
    extra.update(size_key)
    if req.hr_second_pass_steps:
        extra["Hires steps"] = req.hr_second_pass_steps
    if req.hr_upscaler:  # null runs "Latent" but writes no key, as A1111
        extra["Hires upscaler"] = upscaler
    denoising = req.denoising_strength if req.denoising_strength is not None else HIRES_DEFAULT_DENOISING
    plan.denoising_strength = denoising
    plan.extra = {"Denoising strength": denoising, **plan.extra, **extra}
    width, height = floor8(target_w, "hires width"), floor8(target_h, "hires height")
    cover = hires_cover(job, width, height) if req.hr_resize_x and req.hr_resize_y else None
    job.hires = Hires(
        width=width, height=height, upscaler=upscaler, steps=req.hr_second_pass_steps or 0,
        denoising_strength=denoising, model=model, sampler=sampler, schedule=schedule, prompt=prompt,
        negative_prompt=negative, cover=cover,
    )


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


def plan_img2img(api: A1111Dialect, req: Img2ImgRequest, opts, overrides, call: Call, started: float,
                 notes: list[str]) -> Plan:
    if not req.init_images:
        raise InitImageNotFound("Init image not found")
    job, extra = base_job(api, req, opts, overrides, "img2img", call, notes)
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
            derive(job, init_image=inputs[k], seed=job.seed + b * count + k, subseed=job.subseed + b * count + k,
                   batch_size=1, n_iter=1)
            for b in range(job.n_iter)
            for k in range(count)
        ]
        originals = [originals[k] for _ in range(job.n_iter) for k in range(count)]
    else:
        originals = [originals[0]] * job.image_count
    api.service.validate(job)
    plan = _plan("img2img", job, req, opts, extra, denoising, started, notes, originals=originals,
                 overlay_mask=mask if opts["overlay_inpaint"] else None)
    plan.jobs = jobs
    return plan

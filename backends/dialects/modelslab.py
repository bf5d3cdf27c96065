"""The ModelsLab / stablediffusionapi.com dialect (reference/hosted_apis.md §C; seeds/004): text2img on every route
family (v6, enterprise, legacy v3/v4 dreambooth, realtime), fetch, the enterprise stubs and system_load.

What this module owns: the request model with ModelsLab's typing quirks (numbers as strings, flags as "yes"/"no",
booleans, "true" or 1, null meaning absent), its limits and messages, the error shape `{status, message, messege}`,
the translation request → Job and Result → `success` / `processing` / `failed` bodies, the results store behind
fetch (modelslab_jobs.py), webhooks, and the reverse pair for the relay (Job → ModelsLab request, ModelsLab
response → Result). The router (webui/routes/modelslab.py) only binds paths to `ModelslabApi` methods.

Decisions where ModelsLab is vague or cannot be matched locally (each also visible in the response's `meta`):
* `num_inference_steps` 1..50 is accepted and capped at `[modelslab] max_steps` (a note says so).
* Options with no local effect (safety checker, prompt enhancement, tomesd, panorama, self-attention,
  multilingual, hires fix, custom VAE/embeddings, IP-adapter, `algorithm_type`) are accepted and listed in
  `meta.not_applied` with the reason; nothing pretends to have run. `upscale` is a 2× Lanczos resize.
* Scheduler names run through the shared sampler table; the three that cannot run SD text-to-image
  (KarrasVe, ScoreSdeVe, DDIMInverse) run their nearest equivalent, and `meta.scheduler` is the class that ran.
* `base64: "yes"` puts raw base64 PNG data (no `data:` prefix) in `output`; the URLs stay in `proxy_links`.
* A webhook to a host not in `[modelslab] webhook_hosts` (default: none) is refused with a 400 error before any
  work starts, rather than generating and silently not calling back.
* Errors use the documented HTTP codes (400, 401, 404, 429, 500, 503); `[modelslab] always_200 = true` answers
  every error with HTTP 200 for clients written against the historical API.
"""

from __future__ import annotations

import asyncio
import base64 as b64
import binascii
import json
import logging
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ..config import ConfigError
from ..images import UnreadableImage, encode_image, open_image
from . import PerService
from ..job import (
    GenerationFailed,
    InvalidRequest,
    Job,
    Lora,
    LoraNotFound,
    ModelInfo,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    Result,
    SdgateError,
    UnknownSampler,
)
from ..local.samplers import diffusers_schedulers, resolve_sampler
from ..outputs import write_atomic
from ..remote import routing
from .modelslab_jobs import JobStore, Record, deliver_webhook, key_owner, webhook_problem

log = logging.getLogger(__name__)

STYLE = "modelslab"  # the style name ApiKeys knows

# ------------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Family:
    """One route family: its generate paths and its fetch paths (each fetch path is served as `<path>` with
    `{key, request_id}` in the body and as `<path>/{id}` with `{key}`; `fetch_result` uses the first)."""

    name: str
    generate: tuple[str, ...]
    fetch: tuple[str, ...]
    model_required: bool = True  # legacy v3 text2img and realtime have a fixed model: ours is the default one


FAMILIES: tuple[Family, ...] = (
    Family("v6", ("/api/v6/images/text2img",), ("/api/v6/images/fetch",)),
    # the docs' paths and the official SDK's
    Family(
        "enterprise",
        ("/api/v1/enterprise/text2img", "/api/v1/enterprise/images/text2img"),
        ("/api/v1/enterprise/fetch", "/api/v1/enterprise/images/fetch"),
    ),
    Family("v3", ("/api/v3/text2img",), ("/api/v3/fetch",), model_required=False),
    Family("v3-dreambooth", ("/api/v3/dreambooth",), ("/api/v3/dreambooth/fetch",)),
    Family("v4-dreambooth", ("/api/v4/dreambooth",), ("/api/v4/dreambooth/fetch",)),
    Family("realtime", ("/api/v6/realtime/text2img",), ("/api/v6/realtime/fetch",), model_required=False),
)
FAMILY = {f.name: f for f in FAMILIES}

ENTERPRISE = "/api/v1/enterprise"
SYSTEM_LOAD = "/api/v3/system_load"
GENERATIONS = "/generations"  # where output URLs point, like ModelsLab's CDN `<cdn>/generations/<prefix>-<i>.png`

# The ModelsLab document's scheduler list (17) plus LCMScheduler from the current docs.
SCHEDULERS: tuple[str, ...] = (
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "DPMSolverSinglestepScheduler", "KDPM2AncestralDiscreteScheduler",
    "UniPCMultistepScheduler", "DDIMInverseScheduler", "DEISMultistepScheduler", "IPNDMScheduler",
    "KarrasVeScheduler", "ScoreSdeVeScheduler", "LCMScheduler",
)

# Defaults for absent (or null) fields: the seed document's, where it gives one.
DEFAULTS: dict[str, Any] = {
    "negative_prompt": "",
    "width": 512,
    "height": 512,
    "samples": 1,
    "num_inference_steps": 20,
    "guidance_scale": 7.5,
    "clip_skip": 2,
    "scheduler": "UniPCMultistepScheduler",
    "safety_checker": True,
    "safety_checker_type": "sensitive_content_text",
    "enhance_prompt": True,
    "multi_lingual": False,
    "panorama": False,
    "self_attention": False,
    "upscale": False,
    "highres_fix": False,
    "tomesd": True,
    "use_karras_sigmas": True,
    "base64": False,
    "temp": False,
    "instant_response": False,
    "loadbalancer": False,
    "algorithm_type": "none",
}

# (field, lowest, highest) — the documented limits; messages follow ModelsLab's "<field> must be between a and b".
RANGES: tuple[tuple[str, float, float], ...] = (
    ("width", 256, 1024),
    ("height", 256, 1024),
    ("samples", 1, 4),
    ("num_inference_steps", 1, 50),
    ("guidance_scale", 1, 20),
    ("clip_skip", 1, 8),
)
MAX_SEED = 2**63 - 1 - 4  # image i uses seed + i, and torch takes up to 2**63 - 1 here
LORA_STRENGTH = (0.1, 1.0)

INT_FIELDS = ("width", "height", "samples", "num_inference_steps", "clip_skip")
FLAG_FIELDS = (
    "safety_checker", "enhance_prompt", "multi_lingual", "panorama", "self_attention", "upscale", "highres_fix",
    "tomesd", "use_karras_sigmas", "base64", "temp", "instant_response", "loadbalancer",
)
STR_FIELDS = (
    "key", "model_id", "prompt", "negative_prompt", "scheduler", "safety_checker_type", "algorithm_type",
    "embeddings_model", "vae", "webhook", "ip_adapter_id",
)

# Options this server cannot honour, when switched on (flags) or set (values): why, for meta.not_applied.
NOT_APPLIED_FLAGS: dict[str, str] = {
    "safety_checker": "no NSFW safety checker runs here; images are returned unchecked",
    "enhance_prompt": "no prompt-enhancement model here; the prompt is used as written",
    "multi_lingual": "no translation model here; the prompt goes to the text encoder as written",
    "panorama": "panorama generation is not implemented",
    "self_attention": "self-attention guidance is not implemented",
    "highres_fix": "hires fix is not implemented for this style",
    "tomesd": "token merging (tomesd) is not installed; generation runs unmerged",
    "loadbalancer": "one local server, nothing to balance",
}
NOT_APPLIED_VALUES: dict[str, str] = {
    "embeddings_model": "textual-inversion embeddings are not loaded for this style",
    "vae": "custom VAEs are not loaded; the model's own VAE is used",
    "ip_adapter_id": "IP-adapter is not implemented",
    "ip_adapter_image": "IP-adapter is not implemented",
    "ip_adapter_scale": "IP-adapter is not implemented",
}
# Only the values that change something are named; "none" is the default.
ALGORITHM_TYPES = ("none", "dpmsolver+++")

PROCESSING_MESSAGE = "Try to fetch request after given estimated time"
PROCESSING_TIP = "Your image is processing in background, you can get this image using fetch API"
OUTPUT_DIR = "modelslab"  # under the outputs dir: <prefix>-<i>.png, flat, named like the URLs


@dataclass
class Settings:
    """The `[modelslab]` section of the TOML config."""

    sync_wait: float = 20.0  # seconds a request waits for its images before answering `processing`
    max_steps: int = 50  # num_inference_steps above this is capped (a note says so)
    max_queued: int = 5  # unfinished ModelsLab requests beyond this get 429 (ModelsLab's per-account cap)
    always_200: bool = False  # legacy compatibility: errors keep their body but use HTTP 200
    webhook_hosts: list[str] = field(default_factory=list)  # hosts a webhook may call; "*" allows any
    webhook_timeout: float = 30.0
    expiry_hours: float = 24.0  # fetch records and output links live this long
    public_url: str | None = None  # base for output/fetch URLs when behind a proxy; default: the request's

    @classmethod
    def from_config(cls, raw: dict | None) -> "Settings":
        section = dict((raw or {}).get("modelslab", {}) or {})
        s = cls()
        try:
            for name, kind in (("sync_wait", float), ("max_steps", int), ("max_queued", int),
                               ("webhook_timeout", float), ("expiry_hours", float)):
                if name in section:
                    setattr(s, name, kind(section[name]))
            if "always_200" in section:
                s.always_200 = bool(section["always_200"])
            if "webhook_hosts" in section:
                hosts = section["webhook_hosts"]
                s.webhook_hosts = [str(h) for h in ([hosts] if isinstance(hosts, str) else hosts)]
            if section.get("public_url"):
                s.public_url = str(section["public_url"]).rstrip("/")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"[modelslab]: {e}") from None
        if s.sync_wait < 0 or s.max_steps < 1 or s.max_queued < 1 or s.expiry_hours <= 0:
            raise ConfigError("[modelslab]: sync_wait ≥ 0, max_steps ≥ 1, max_queued ≥ 1 and expiry_hours > 0")
        return s


# ------------------------------------------------------------------------------------------------ errors


class InvalidKey(SdgateError):
    status = 401
    code = "invalid_key"


class PaymentRequired(SdgateError):
    status = 402
    code = "payment_required"


class Forbidden(SdgateError):
    status = 403
    code = "forbidden"


class RequestNotFound(SdgateError):
    status = 404
    code = "request_not_found"


class RateLimited(QueueFull):
    """ModelsLab's queue cap: HTTP 429 with `retry_after` seconds in the body."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message, details={"retry_after": int(retry_after)})
        self.retry_after = int(retry_after)


class UpstreamError(SdgateError):
    """A ModelsLab error from a remote gateway whose status maps to nothing more specific."""

    code = "upstream_error"

    def __init__(self, message: str, status: int, details: dict | None = None):
        super().__init__(message, details=details)
        self.status = status


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """ModelsLab's error shape; both spellings, as legacy clients read `messege`."""
    return {"status": "error", "message": message, "messege": message, **extra}


def error_response(exc: BaseException, always_200: bool = False) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for any exception raised while serving a ModelsLab route. Never a traceback."""
    if isinstance(exc, SdgateError):
        extra = {}
        if isinstance(exc, QueueFull):
            extra["retry_after"] = int(getattr(exc, "retry_after", exc.details.get("retry_after", 30)))
            status = 429
        else:
            status = exc.status
        body = error_body(exc.message, **extra)
    else:
        status, body = 500, error_body(f"internal error ({type(exc).__name__})")
    return (200 if always_200 else status), body


# ---------------------------------------------------------------------------------------- request parsing

_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}


def parse_flag(value: Any, name: str = "flag") -> Optional[bool]:
    """"yes"/"no" in any case, booleans, "true"/"false", 1/0; None (and "") mean absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{name} must be yes or no")


def parse_number(value: Any, name: str, integer: bool) -> Optional[Union[int, float]]:
    """An int, float or numeric string ("512", " 7.5 "); None and "" mean absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{name} must be a whole number")
        return int(value)
    return float(value)


class Text2ImgRequest(BaseModel):
    """The text2img body of every family (seeds/004, reference C.2). Every field is optional here: absent and
    null mean the default (DEFAULTS); `check()` enforces what is required and the limits, with ModelsLab's
    messages. Unknown fields are kept (extra="allow") only to be listed in `meta.ignored_fields`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    key: Optional[str] = None
    model_id: Optional[str] = None
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    samples: Optional[int] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    clip_skip: Optional[int] = None
    scheduler: Optional[str] = None
    safety_checker: Optional[bool] = None
    safety_checker_type: Optional[str] = None
    enhance_prompt: Optional[bool] = None
    multi_lingual: Optional[bool] = None
    panorama: Optional[bool] = None
    self_attention: Optional[bool] = None
    upscale: Optional[bool] = None
    highres_fix: Optional[bool] = None
    tomesd: Optional[bool] = None
    use_karras_sigmas: Optional[bool] = None
    base64: Optional[bool] = None
    temp: Optional[bool] = None
    instant_response: Optional[bool] = None
    loadbalancer: Optional[bool] = None
    algorithm_type: Optional[str] = None
    embeddings_model: Optional[str] = None
    lora_model: Optional[Any] = None  # "a,b" or ["a", "b"]
    lora_strength: Optional[Any] = None  # "0.6,0.8", 0.6 or [0.6, 0.8]
    vae: Optional[str] = None
    webhook: Optional[str] = None
    track_id: Optional[Union[int, str]] = None
    ip_adapter_id: Optional[str] = None
    ip_adapter_scale: Optional[Any] = None
    ip_adapter_image: Optional[Any] = None

    @field_validator(*INT_FIELDS, mode="before")
    @classmethod
    def _int(cls, value, info: ValidationInfo):
        return parse_number(value, info.field_name, integer=True)

    @field_validator("guidance_scale", mode="before")
    @classmethod
    def _float(cls, value, info: ValidationInfo):
        return parse_number(value, info.field_name, integer=False)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value):
        seed = parse_number(value, "seed", integer=True)
        return None if seed is None or seed < 0 else seed  # null, "" and -1: a random seed

    @field_validator(*FLAG_FIELDS, mode="before")
    @classmethod
    def _flag(cls, value, info: ValidationInfo):
        return parse_flag(value, info.field_name)

    @field_validator(*STR_FIELDS, mode="before")
    @classmethod
    def _str(cls, value, info: ValidationInfo):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric model_id or key
        raise ValueError(f"{info.field_name} must be a string")

    @field_validator("track_id", mode="before")
    @classmethod
    def _track_id(cls, value):
        if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        raise ValueError("track_id must be a string or an integer")

    def value(self, name: str) -> Any:
        """The field's value, or its default when absent."""
        v = getattr(self, name)
        return DEFAULTS.get(name) if v is None else v


def _validation_message(error: ValidationError) -> str:
    messages = []
    for e in error.errors():
        msg = str(e.get("msg", ""))
        msg = msg.removeprefix("Value error, ")
        if not e.get("ctx", {}).get("error") and e.get("loc"):  # pydantic's own message: name the field
            msg = f"{e['loc'][0]}: {msg}"
        messages.append(msg)
    return "; ".join(dict.fromkeys(messages))


def parse_body(raw: bytes | str | dict) -> dict[str, Any]:
    """The JSON object of a request body (the client's Content-Type is not trusted either way)."""
    if isinstance(raw, dict):
        return raw
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


def parse_request(body: dict[str, Any]) -> Text2ImgRequest:
    try:
        return Text2ImgRequest.model_validate(body)
    except ValidationError as e:
        raise InvalidRequest(_validation_message(e)) from None


def check(req: Text2ImgRequest, family: Family) -> None:
    """Required fields and the documented limits, in ModelsLab's words (first the missing fields, then ranges)."""
    problems = []
    if not (req.prompt or "").strip():
        problems.append("prompt is required")
    if family.model_required and not (req.model_id or "").strip():
        problems.append("model_id is required")
    out_of_range = set()
    for name, low, high in RANGES:
        if not low <= req.value(name) <= high:
            problems.append(f"{name} must be between {low:g} and {high:g}")
            out_of_range.add(name)
    for name in ("width", "height"):
        if name not in out_of_range and req.value(name) % 8:
            problems.append(f"{name} must be divisible by 8")
    if req.seed is not None and req.seed > MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED}")
    algorithm = str(req.value("algorithm_type")).strip().lower()
    if algorithm not in ALGORITHM_TYPES:
        problems.append(f"algorithm_type must be one of {', '.join(ALGORITHM_TYPES)}")
    if problems:
        raise InvalidRequest("; ".join(problems), details={"problems": problems})


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def parse_loras(lora_model: Any, lora_strength: Any) -> list[Lora]:
    """`lora_model` "a,b" + `lora_strength` "0.6,0.8" → Loras. No strength: 1.0 each; otherwise one per LoRA."""
    names = _split(lora_model)
    strengths_text = _split(lora_strength)
    if not names:
        return []
    if not strengths_text:
        return [Lora(name, 1.0) for name in names]
    if len(strengths_text) != len(names):
        raise InvalidRequest(
            f"lora_strength must give one value per lora_model: {len(names)} LoRAs, {len(strengths_text)} strengths"
        )
    loras = []
    for name, text in zip(names, strengths_text):
        try:
            strength = float(text)
        except ValueError:
            raise InvalidRequest(f"lora_strength {text!r} is not a number") from None
        if not LORA_STRENGTH[0] <= strength <= LORA_STRENGTH[1]:
            raise InvalidRequest(f"lora_strength must be between {LORA_STRENGTH[0]:g} and {LORA_STRENGTH[1]:g}")
        loras.append(Lora(name, strength))
    return loras


# ------------------------------------------------------------------------------------------ request → job


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


@dataclass
class Plan:
    """A checked request, translated: the Job plus what the response needs that a Job does not carry."""

    job: Job
    meta: dict[str, Any]
    base64: bool
    upscale: bool
    instant: bool
    webhook: str | None
    track_id: Any


def build_plan(
    req: Text2ImgRequest,
    *,
    model: ModelInfo,
    model_id: str | None,
    settings: Settings,
    notes: list[str] | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """Translate a checked request into a Job (pure: the model is already resolved). The seed is drawn here, not
    by the engine, so that `meta.seed` is concrete even in a `processing` answer."""
    notes = list(notes or [])
    scheduler = str(req.value("scheduler")).strip()
    karras = bool(req.value("use_karras_sigmas"))
    try:
        choice = resolve_sampler(scheduler, "Karras" if karras else None)
    except UnknownSampler:
        raise InvalidRequest(
            f"scheduler {scheduler!r} is not supported; use one of: {', '.join(SCHEDULERS)}",
            details={"scheduler": scheduler, "valid": list(SCHEDULERS)},
        ) from None
    notes += choice.notes

    steps = req.value("num_inference_steps")
    if steps > settings.max_steps:
        notes.append(f"num_inference_steps {steps} capped at {settings.max_steps} (this server's maximum)")
        steps = settings.max_steps
    seed = req.seed if req.seed is not None else (rng or random).randrange(2**32 - 1)
    samples = req.value("samples")
    width, height = req.value("width"), req.value("height")
    loras = parse_loras(req.lora_model, req.lora_strength)

    not_applied = {name: why for name, why in NOT_APPLIED_FLAGS.items() if req.value(name)}
    not_applied |= {name: why for name, why in NOT_APPLIED_VALUES.items() if getattr(req, name) not in (None, "")}
    if str(req.value("algorithm_type")).strip().lower() != "none":
        not_applied["algorithm_type"] = "the scheduler runs with its default algorithm"
    if req.temp:
        not_applied["temp"] = "every link here expires after the configured time anyway"

    job = Job(
        prompt=str(req.prompt).strip(),
        negative_prompt=req.value("negative_prompt") or "",
        width=width,
        height=height,
        steps=steps,
        cfg_scale=float(req.value("guidance_scale")),
        sampler=scheduler,
        schedule="Karras" if karras else None,
        seed=seed,
        batch_size=samples,
        n_iter=1,
        model=model.title,
        clip_skip=req.value("clip_skip"),
        loras=loras,
        prompt_weighting=True,  # ModelsLab prompts use the A1111 "((word))" emphasis (see the seed's example)
        source=STYLE,
    )
    meta: dict[str, Any] = {
        "prompt": job.prompt,
        "model_id": model_id,
        "negative_prompt": job.negative_prompt,
        "scheduler": choice.scheduler_class,
        "safety_checker": yes_no(req.value("safety_checker")),
        "safety_checker_type": req.value("safety_checker_type"),
        "W": width,
        "H": height,
        "width": width,
        "height": height,
        "guidance_scale": job.cfg_scale,
        "seed": seed,
        "seeds": [seed + i for i in range(samples)],
        "steps": steps,
        "n_samples": samples,
        "clip_skip": job.clip_skip,
        "use_karras_sigmas": yes_no(karras),
        "tomesd": yes_no(req.value("tomesd")),
        "upscale": yes_no(req.value("upscale")),
        "multi_lingual": yes_no(req.value("multi_lingual")),
        "panorama": yes_no(req.value("panorama")),
        "self_attention": yes_no(req.value("self_attention")),
        "enhance_prompt": yes_no(req.value("enhance_prompt")),
        "base64": yes_no(req.value("base64")),
        "instant_response": yes_no(req.value("instant_response")),
        "algorithm_type": req.value("algorithm_type"),
        "embeddings": req.embeddings_model,
        "lora": ",".join(lora.name for lora in loras) or None,
        "lora_strength": ",".join(f"{lora.weight:g}" for lora in loras) or None,
        "vae": req.vae,
        "model": model.title,
        "outdir": OUTPUT_DIR,
        "notes": notes,
        "not_applied": not_applied,
    }
    if scheduler != choice.scheduler_class:
        meta["scheduler_requested"] = scheduler
    if req.value("upscale"):
        meta["upscaler"] = "Lanczos 2x (no ESRGAN model here)"
    if req.model_extra:
        meta["ignored_fields"] = sorted(req.model_extra)
    return Plan(
        job=job,
        meta=meta,
        base64=bool(req.value("base64")),
        upscale=bool(req.value("upscale")),
        instant=bool(req.value("instant_response")),
        webhook=(req.webhook or "").strip() or None,
        track_id=req.track_id,
    )


def infotext(job: Job, result: Result) -> str:
    """A1111-style generation parameters for the PNG, so any PNG-info tool reads the files back."""
    lines = [job.prompt]
    if job.negative_prompt:
        lines.append(f"Negative prompt: {job.negative_prompt}")
    params = {
        "Steps": job.steps,
        "Sampler": result.scheduler_class,
        "Schedule type": result.schedule,
        "CFG scale": f"{job.cfg_scale:g}",
        "Seed": result.seeds[0] if result.seeds else job.seed,
        "Size": f"{job.width}x{job.height}",
        "Model hash": result.model.hash,
        "Model": result.model.name,
        "Clip skip": job.clip_skip if job.clip_skip > 1 else None,
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def processing_body(record: Record, eta: float, fetch_result: str) -> dict[str, Any]:
    return {
        "status": "processing",
        "tip": PROCESSING_TIP,
        "tip_1": f"Fetch {fetch_result} with your key after about {eta:g} s",
        "eta": eta,
        "message": PROCESSING_MESSAGE,
        "messege": PROCESSING_MESSAGE,
        "webhook_status": record.webhook_status,
        "fetch_result": fetch_result,
        "id": record.id,
        "output": [],
        "future_links": list(record.links),
        "meta": record.meta,
    }


def failed_body(record: Record) -> dict[str, Any]:
    message = record.error.message if record.error else "generation failed"
    return {"status": "failed", "id": record.id, "message": message, "messege": message, "output": [],
            "meta": record.meta}


def webhook_payload(record: Record) -> dict[str, Any]:
    if record.status == "success" and record.response:
        r = record.response
        return {"status": "success", "id": record.id, "output": r["output"], "generationTime": r["generationTime"],
                "track_id": record.track_id, "meta": r["meta"]}
    message = record.error.message if record.error else "generation failed"
    return {"status": "failed", "id": record.id, "message": message, "messege": message, "track_id": record.track_id}


# -------------------------------------------------------------------------------------- the API over Service


def output_images(plan: Plan, result: Result) -> list[Image.Image]:
    """The images as ModelsLab returns them: `upscale` is a 2x Lanczos resize here (meta says so)."""
    if not plan.upscale:
        return result.images
    return [im.resize((im.width * 2, im.height * 2), Image.LANCZOS) for im in result.images]


def _on_gateway(model: ModelInfo) -> bool:
    """Whether a job for `model` runs on a remote gateway, not here: a `gateway:` model (alias or target), or a
    route context that names a gateway (the style routed to one, or the UI's Backend choice)."""
    ctx = routing.current()
    return model.kind == "gateway" or (ctx is not None and ctx.gateway is not None)


class ModelslabApi(PerService):
    """What each ModelsLab route does, over a Service. One instance per service (the results store is in it)."""

    def __init__(self, service):
        self.service = service
        self.settings = Settings.from_config(service.config.raw)
        self.store = JobStore(self.settings.expiry_hours * 3600)
        self.outdir = Path(service.config.outputs_dir) / OUTPUT_DIR
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    # ------------------------------------------------------------------ auth and lookups

    def authorize(self, body: dict[str, Any], client_host: str | None) -> str | None:
        key = body.get("key")
        key = None if key is None else str(key)
        if not self.service.keys.allows(STYLE, key, client_host):
            raise InvalidKey("Invalid API key")
        return key

    def _owner(self, key: str | None) -> str | None:
        return key_owner(key) if self.service.keys.configured(STYLE) else None

    def _resolve_model(self, model_id: str | None) -> tuple[ModelInfo, list[str]]:
        """The model for `model_id` (blocking: may scan the models folder). In --demo an unknown id runs a tiny
        model of the family its name suggests, with a note, so every ModelsLab script works against the demo."""
        models = self.service.models
        if not model_id:
            return models.resolve(None), []
        try:
            return models.resolve(model_id), []
        except ModelNotFound:
            if not self.service.demo:
                raise ModelNotFound(f"Model not found: {model_id}", details={"model_id": model_id}) from None
        fallback = "tiny-sdxl" if "xl" in model_id.lower() else "tiny-sd1"
        return models.resolve(fallback), [f"model_id {model_id!r} is not configured; --demo ran {fallback}"]

    def _check_loras(self, loras: list[Lora]) -> None:
        """Name every missing LoRA before queueing (the engine would find only the first, and only later)."""
        if not loras:
            return
        available = {name.lower() for name in self.service.engine.loras.files()}
        missing = [lora.name for lora in loras if lora.name.lower() not in available]
        if missing:
            raise LoraNotFound(f"lora not found: {', '.join(missing)}", details={"missing": missing})

    async def plan(self, req: Text2ImgRequest) -> Plan:
        """A checked request → its Plan (model resolved, LoRAs present); what the route and the UI tab share."""
        model_id = (req.model_id or "").strip() or None
        model, notes = await asyncio.to_thread(self._resolve_model, model_id)
        plan = build_plan(req, model=model, model_id=model_id, settings=self.settings, notes=notes)
        if not _on_gateway(model):  # a gateway has LoRAs of its own: it finds them or says which it lacks
            await asyncio.to_thread(self._check_loras, plan.job.loras)
        return plan

    def base_url(self, request_base: str) -> str:
        return self.settings.public_url or request_base.rstrip("/")

    # ------------------------------------------------------------------ text2img

    async def text2img(self, raw: bytes | dict, family: Family, request_base: str, client_host: str | None) -> dict:
        body = parse_body(raw)
        key = self.authorize(body, client_host)
        req = parse_request(body)
        check(req, family)
        plan = await self.plan(req)
        if plan.webhook:
            problem = webhook_problem(plan.webhook, self.settings.webhook_hosts)
            if problem:
                raise InvalidRequest(problem)

        self.store.sweep()
        if self.store.in_flight() >= self.settings.max_queued:
            raise RateLimited(
                f"Rate limit exceeded. Maximum {self.settings.max_queued} queued requests allowed.",
                retry_after=self._retry_after(),
            )
        base = self.base_url(request_base)
        request_id = self.store.new_id()
        prefix = str(uuid.uuid4())
        plan.meta["file_prefix"] = prefix
        plan.job.extra["modelslab_id"] = request_id
        record = Record(
            id=request_id,
            fetch_path=family.fetch[0],
            links=[f"{base}{GENERATIONS}/{prefix}-{i}.png" for i in range(plan.job.image_count)],
            meta=plan.meta,
            job=plan.job,
            owner=self._owner(key),
            base64=plan.base64,
            webhook=plan.webhook,
            track_id=plan.track_id,
            webhook_status="pending" if plan.webhook else "",
        )
        try:
            record.ticket = self.service.submit(plan.job)
        except QueueFull as e:  # the shared queue is full: ModelsLab's busy answer
            raise RateLimited(e.message, retry_after=self._retry_after()) from None
        self.store.add(record)
        task = asyncio.create_task(self._complete(record, plan, prefix))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        if not plan.instant and self.settings.sync_wait > 0:
            try:
                await asyncio.wait_for(asyncio.shield(record.done.wait()), self.settings.sync_wait)
            except asyncio.TimeoutError:
                pass
        if record.status == "success":
            return record.response
        if record.status == "failed":
            raise record.error
        return processing_body(record, self.store.eta(record, self.service.queue), self._fetch_url(base, record))

    def _fetch_url(self, base: str, record: Record) -> str:
        return f"{base}{record.fetch_path}/{record.id}"

    def _retry_after(self) -> int:
        """Seconds until a queued ModelsLab job should have finished (the soonest one)."""
        etas = [self.store.eta(r, self.service.queue) for r in self.store.records() if r.status == "processing"]
        return max(1, math.ceil(min(etas))) if etas else 5

    async def _complete(self, record: Record, plan: Plan, prefix: str) -> None:
        """Wait for the job, write the files, settle the record, then call the webhook (after `done` is set, so a
        synchronous answer never waits on somebody else's webhook receiver)."""
        ticket = record.ticket
        try:
            try:
                result = await ticket.wait()
            except asyncio.CancelledError:
                if not ticket.future.cancelled():
                    raise  # this task itself is being cancelled (shutdown)
                raise QueueFull("the job was dropped from the queue (server shutting down)") from None
            record.response = await asyncio.to_thread(self._finish, record, plan, prefix, result)
            record.meta, record.status = record.response["meta"], "success"
        except SdgateError as e:
            record.error, record.status = e, "failed"
        except Exception as e:  # noqa: BLE001 - a job must settle whatever happens
            log.exception("ModelsLab request %s failed", record.id)
            record.error, record.status = GenerationFailed(f"generation failed: {type(e).__name__}: {e}"), "failed"
        finally:
            record.finished = time.time()
            record.ticket = None
            record.done.set()
        if record.webhook:
            status = await deliver_webhook(record.webhook, webhook_payload(record), self.settings.webhook_timeout)
            record.webhook_status = status
            if record.response is not None:
                record.response["webhook_status"] = status

    def _finish(self, record: Record, plan: Plan, prefix: str, result: Result) -> dict[str, Any]:
        """On a worker thread: upscale, write `<prefix>-<i>.png` (the future links), build the success body."""
        started = time.perf_counter()
        job = plan.job
        self.store.observe(job, result.timings.get("total", 0.0) - result.timings.get("load", 0.0))
        images = output_images(plan, result)
        text = infotext(job, result)
        self.outdir.mkdir(parents=True, exist_ok=True)
        encoded = []
        for i, image in enumerate(images):
            data = encode_image(image, "png", text)
            write_atomic(self.outdir / f"{prefix}-{i}.png", data)
            encoded.append(data)
        links = record.links[: len(images)]
        # a new dict: a fetch on the event loop may be serialising the old one right now
        meta = {
            **record.meta,
            "seed": result.seeds[0] if result.seeds else record.meta["seed"],
            "seeds": list(result.seeds),
            "scheduler": result.scheduler_class,
            "model": result.model.title,
            "notes": list(dict.fromkeys([*record.meta["notes"], *result.notes])),
        }
        if result.interrupted or result.skipped:
            meta["notes"].append(f"interrupted: {len(images)} of {job.image_count} images")
        return {
            "status": "success",
            "generationTime": round(result.timings.get("total", 0.0) + time.perf_counter() - started, 3),
            "id": record.id,
            "output": [b64.b64encode(d).decode("ascii") for d in encoded] if plan.base64 else links,
            "proxy_links": links,
            "nsfw_content_detected": False,
            "meta": meta,
            "webhook_status": record.webhook_status,
            "tip": "",
        }

    # ------------------------------------------------------------------ fetch

    async def fetch(self, raw: bytes | dict, path_id: str | None, request_base: str, client_host: str | None) -> dict:
        body = parse_body(raw)
        key = self.authorize(body, client_host)
        wanted = path_id if path_id is not None else body.get("request_id", body.get("id"))
        if wanted is None or str(wanted).strip() == "":
            raise InvalidRequest("request_id is required")
        try:
            request_id = int(str(wanted).strip())
        except ValueError:
            request_id = None
        record = self.store.get(request_id) if request_id is not None else None
        if record is None or (record.owner is not None and record.owner != self._owner(key)):
            raise RequestNotFound(f"Request not found: {wanted} (unknown or expired id)")
        if record.status == "success":
            return record.response
        if record.status == "failed":
            return failed_body(record)
        base = self.base_url(request_base)
        return processing_body(record, self.store.eta(record, self.service.queue), self._fetch_url(base, record))

    # ------------------------------------------------------------------ generated files

    def generation_file(self, name: str) -> Path | None:
        """The file behind an output URL, or None when it is unknown, not written yet, or expired."""
        if not re.fullmatch(r"[0-9a-f-]{36}-\d+\.png", name):
            return None
        path = self.outdir / name
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return path if age <= self.settings.expiry_hours * 3600 else None

    # ------------------------------------------------------------------ enterprise stubs and system load

    def _queue_state(self) -> tuple[int, float]:
        queue = self.service.queue
        tickets = ([queue.current] if queue.current is not None else []) + queue.pending()
        seconds = sum(JobStore.units(t.job) * (1.0 - t.progress.fraction) for t in tickets) * self.store.rate
        return len(tickets), round(seconds, 2)

    async def system_load(self, raw: bytes | dict, client_host: str | None) -> dict:
        self.authorize(parse_body(raw), client_host)
        queue_num, queue_time = self._queue_state()
        return {"queue_num": queue_num, "queue_time": queue_time, "status": "ok"}

    async def system_details(self, raw: bytes | dict, client_host: str | None) -> dict:
        self.authorize(parse_body(raw), client_host)
        queue_num, queue_time = self._queue_state()
        service = self.service
        return {
            "status": "success",
            "message": "sdgate local server",
            "device": service.device,
            "dtype": str(service.dtype).removeprefix("torch."),
            "demo": service.demo,
            "models_loaded": service.models.loaded(),
            "queue_num": queue_num,
            "queue_time": queue_time,
        }

    async def schedulers_list(self, raw: bytes | dict, client_host: str | None) -> dict:
        self.authorize(parse_body(raw), client_host)
        names = list(dict.fromkeys([*SCHEDULERS, *diffusers_schedulers()]))
        return {"status": "success", "message": names, "schedulers": names}

    async def get_all_models(self, raw: bytes | dict, client_host: str | None) -> dict:
        self.authorize(parse_body(raw), client_host)
        models = await asyncio.to_thread(self.service.models.list)
        loaded = set(self.service.models.loaded())
        aliases = dict(getattr(self.service.models, "aliases", {}))
        items = [{"model_id": m.name, "title": m.title, "loaded": m.title in loaded} for m in models]
        items += [{"model_id": alias, "title": target, "alias": True} for alias, target in sorted(aliases.items())]
        return {"status": "success", "message": items, "models": items}


# ================================================================== the reverse pair, for the relay to a gateway


@dataclass
class UpstreamRequest:
    """A ModelsLab request to send to a gateway: POST `path` (relative to the gateway's base URL and prefix) with
    `json`. `json["key"]` is None: the client fills it (and/or a bearer header) and must redact it from logs.
    `unsupported`: Job fields this style cannot carry (they would change the image, so the relay reports them);
    `notes`: approximations made on the way."""

    path: str
    json: dict[str, Any]
    method: str = "POST"
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key_field: str = "key"


@dataclass
class Pending:
    """A `processing` answer: poll `fetch_request(pending)` after about `eta` seconds."""

    id: int | str
    eta: float
    fetch_result: str | None
    future_links: list[str]
    meta: dict[str, Any]


@dataclass
class Finished:
    """A `success` answer. `output` holds URLs (download them: `decode_output` returns None for those) or base64."""

    id: int | str | None
    output: list[str]
    meta: dict[str, Any]
    generation_time: float | None = None
    nsfw: bool = False


def job_to_request(
    job: Job,
    *,
    family: str = "v6",
    model_id: str | None = None,
    base64: bool = False,
    webhook: str | None = None,
    track_id: Any = None,
    instant_response: bool = False,
) -> UpstreamRequest:
    """The body a ModelsLab client would send for `job` (ints and floats as the official SDK sends them, flags as
    "yes"/"no"). Options that would change the prompt or image upstream (enhance_prompt, tomesd, upscale...) are
    sent as "no" so the gateway's image matches the Job. Raises InvalidRequest when the job cannot be expressed
    (more than 4 images: split the Job first)."""
    fam = FAMILY[family]
    unsupported: list[str] = []
    notes: list[str] = []
    if job.image_count > 4:
        raise InvalidRequest(f"ModelsLab returns at most 4 images per request; this job has {job.image_count}")
    choice = resolve_sampler(job.sampler, job.schedule)
    if choice.scheduler_class != job.sampler:
        notes.append(f"sampler {job.sampler!r} sent as scheduler {choice.scheduler_class}")
    karras = bool(choice.config.get("use_karras_sigmas"))
    # ModelsLab has one schedule switch, use_karras_sigmas: any other schedule type cannot be asked for
    asked = (job.schedule or "automatic").strip().lower()
    if asked not in ("automatic", "karras") or choice.schedule not in ("Automatic", "Karras"):
        unsupported.append("schedule")
    body: dict[str, Any] = {
        "key": None,
        "model_id": model_id if model_id is not None else job.model,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt or None,
        "width": job.width,
        "height": job.height,
        "samples": job.image_count,
        "num_inference_steps": job.steps,
        "guidance_scale": job.cfg_scale,
        "seed": job.seed if job.seed is not None and job.seed >= 0 else None,
        "clip_skip": job.clip_skip,
        "scheduler": choice.scheduler_class,
        "use_karras_sigmas": yes_no(karras),
        "safety_checker": "no",
        "enhance_prompt": "no",
        "multi_lingual": "no",
        "panorama": "no",
        "self_attention": "no",
        "upscale": "no",
        "tomesd": "no",
        "base64": yes_no(base64),
        "lora_model": ",".join(lora.name for lora in job.loras) or None,
        "lora_strength": ",".join(f"{lora.weight:g}" for lora in job.loras) or None,
        "webhook": webhook,
        "track_id": track_id,
    }
    if instant_response:
        body["instant_response"] = True
    if not fam.model_required and model_id is None:
        body.pop("model_id")
    if job.init_image is not None:
        unsupported.append("init_image")
    if job.mask is not None:
        unsupported.append("mask")
    if job.eta is not None:
        unsupported.append("eta")
    if not job.prompt_weighting:
        unsupported.append("prompt_weighting")
    if job.preview_every:
        unsupported.append("preview_every")
    if job.mask_crop_padding is not None:
        unsupported.append("mask_crop_padding")
    return UpstreamRequest(path=fam.generate[0], json=body, unsupported=unsupported, notes=notes)


def fetch_request(
    pending: Pending | int | str, *, family: str = "v6", base_url: str | None = None
) -> UpstreamRequest:
    """The fetch call for a pending answer (or a bare id). When `fetch_result` lies under `base_url` (the gateway's
    base URL plus prefix) its path is used; otherwise `{fetch path}/{id}` of the family is built — the relay should
    never post a key to a host it was not configured with."""
    request_id = pending.id if isinstance(pending, Pending) else pending
    fetch_result = pending.fetch_result if isinstance(pending, Pending) else None
    path = f"{FAMILY[family].fetch[0]}/{request_id}"
    if fetch_result and base_url and fetch_result.startswith(base_url.rstrip("/") + "/"):
        path = fetch_result[len(base_url.rstrip("/")):]
    return UpstreamRequest(path=path, json={"key": None})


def _message(body: Any) -> str:
    """The error text from any of the shapes a gateway returns (reference D.3)."""
    if isinstance(body, dict):
        for key in ("message", "messege", "description", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, (list, dict)) and value:
                return json.dumps(value)[:500]
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if isinstance(body.get("errors"), list) and body["errors"]:
            return "; ".join(str(e) for e in body["errors"])
    return ""


def error_from_response(status_code: int, body: Any) -> SdgateError:
    """A ModelsLab error (`status: error|failed`, any HTTP code, including the legacy 200) as an SdgateError that
    carries the upstream status and message in `details`."""
    message = _message(body) or f"ModelsLab gateway answered HTTP {status_code}"
    low = message.lower()
    details: dict[str, Any] = {"upstream_status": status_code, "upstream_message": message}
    retry_after = body.get("retry_after") if isinstance(body, dict) else None
    if retry_after is not None:
        details["retry_after"] = retry_after
    if isinstance(body, dict) and body.get("status") == "failed":
        return GenerationFailed(message, details=details)
    if status_code == 401 or "invalid api key" in low:
        return InvalidKey(message, details=details)
    if status_code == 429 or "rate limit" in low:
        try:
            seconds = int(float(retry_after)) if retry_after is not None else 30
        except (TypeError, ValueError):
            seconds = 30
        err = RateLimited(message, retry_after=seconds)
        err.details.update(details)
        return err
    if "model not found" in low:
        return ModelNotFound(message, details=details)
    if "lora not found" in low:
        return LoraNotFound(message, details=details)
    if status_code == 402:
        return PaymentRequired(message, details=details)
    if status_code == 403:
        return Forbidden(message, details=details)
    if status_code == 404:
        return RequestNotFound(message, details=details)
    if status_code in (400, 422) or status_code < 300:  # legacy HTTP 200 errors are almost all bad parameters
        return InvalidRequest(message, details=details)
    if status_code == 503:
        return ModelUnavailable(message, details=details)
    return UpstreamError(message, status_code if status_code >= 400 else 502, details=details)


def parse_response(status_code: int, body: Any) -> Finished | Pending:
    """A ModelsLab answer (text2img or fetch) → Finished or Pending; errors and failures are raised (HTTP 200 with
    `status: error` included). `body` is the parsed JSON (anything else counts as a garbage answer)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            body = None
    if not isinstance(body, dict):
        if status_code >= 400:
            raise error_from_response(status_code, {})
        raise GenerationFailed("the ModelsLab gateway answered something that is not a JSON object",
                               details={"upstream_status": status_code})
    status = str(body.get("status", "")).lower()
    if status in ("error", "failed") or status_code >= 400:
        raise error_from_response(status_code, body)
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    if status == "success":
        output = body.get("output") or []
        if isinstance(output, str):
            output = [output]
        return Finished(
            id=body.get("id"),
            output=[str(o) for o in output],
            meta=meta,
            generation_time=body.get("generationTime"),
            nsfw=bool(body.get("nsfw_content_detected", False)),
        )
    if status == "processing":
        try:
            eta = float(body.get("eta") or 0)
        except (TypeError, ValueError):
            eta = 0.0
        links = body.get("future_links") or []
        return Pending(
            id=body.get("id"),
            eta=eta,
            fetch_result=body.get("fetch_result") or None,
            future_links=[str(u) for u in links] if isinstance(links, list) else [],
            meta=meta,
        )
    raise GenerationFailed(f"unexpected ModelsLab status {body.get('status')!r}",
                           details={"upstream_status": status_code})


def decode_output(entry: str) -> Image.Image | None:
    """An `output` entry as an image: base64 (raw or a data: URL) is decoded; an http(s) URL gives None (the relay
    downloads it). Raises GenerationFailed for anything else."""
    text = entry.strip()
    if text.startswith(("http://", "https://")):
        return None
    text = re.sub(r"^data:[^,]*,", "", text)
    try:
        image = open_image(b64.b64decode(text + "=" * (-len(text) % 4), validate=False))
    except (binascii.Error, UnreadableImage) as e:
        raise GenerationFailed(f"a ModelsLab output entry is neither a URL nor an image ({e})") from None
    return image


def result_from_response(job: Job, finished: Finished, images: list[Image.Image],
                         model: ModelInfo | None = None) -> Result:
    """A Result from a `success` answer and its images (decoded or downloaded, in `output` order)."""
    meta = finished.meta
    seeds = meta.get("seeds")
    if not (isinstance(seeds, list) and len(seeds) >= len(images)):
        try:
            first = int(meta.get("seed"))
        except (TypeError, ValueError):
            first = job.seed
        seeds = [first + i for i in range(len(images))]
    scheduler = str(meta.get("scheduler") or job.sampler)
    karras = str(meta.get("use_karras_sigmas", "no")).lower() in _TRUE
    notes = [str(n) for n in meta.get("notes", []) if isinstance(n, str)]
    notes += [f"{name} not applied by the gateway: {why}" for name, why in (meta.get("not_applied") or {}).items()]
    if model is None:
        name = str(meta.get("model_id") or meta.get("model") or job.model or "modelslab")
        model = ModelInfo(name=name, title=name, source="modelslab", kind="remote")
    return Result(
        job=job,
        images=images,
        seeds=[int(s) for s in seeds[: len(images)]],
        model=model,
        sampler=scheduler,
        schedule="Karras" if karras else "Automatic",
        scheduler_class=scheduler,
        notes=notes,
        timings={"total": float(finished.generation_time or 0.0)},
        finished_at=time.time(),
    )

"""ModelsLab's tables, as data: the route families, the scheduler list, the field defaults and limits, the options
this server cannot honour, the random-seed range, and the `[modelslab]` settings of the TOML config
(docs/reference/hosted_apis.md §C)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...config import ConfigError
from ...seeds import SeedRange


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
DEFAULT_FAMILY = "v6"

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
    "upscale": 0,
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
MAX_SEED = 2**63 - 1 - 4  # the seeds accepted: image i uses seed + i, and torch takes up to 2**63 - 1 here
RANDOM_SEEDS = SeedRange(0, 2**32 - 2)  # the seeds drawn for a null, "" or -1 seed
LORA_STRENGTH = (0.1, 1.0)

INT_FIELDS = ("width", "height", "samples", "num_inference_steps", "clip_skip")
FLAG_FIELDS = (
    "safety_checker", "enhance_prompt", "multi_lingual", "panorama", "self_attention", "highres_fix",
    "tomesd", "use_karras_sigmas", "base64", "temp", "instant_response", "loadbalancer",
)
STR_FIELDS = (
    "key", "model_id", "prompt", "negative_prompt", "scheduler", "safety_checker_type", "algorithm_type",
    "embeddings_model", "vae", "webhook", "ip_adapter_id",
)

# Options this server cannot honour, when switched on (flags) or set (values): why, for meta.not_applied.
# (What a switch that does run could not do for one job, e.g. SAG on SDXL, comes back from the engine.)
NOT_APPLIED_FLAGS: dict[str, str] = {
    "highres_fix": "hires fix is not implemented for this style; use upscale for a second pass at 2x",
    "loadbalancer": "one local server, nothing to balance",
}
NOT_APPLIED_VALUES: dict[str, str] = {
    "ip_adapter_id": "IP-adapter is not implemented",
    "ip_adapter_image": "IP-adapter is not implemented",
    "ip_adapter_scale": "IP-adapter is not implemented",
}
# The engine's words for what it could not apply (Job field names) → ModelsLab's request fields.
JOB_FIELD_NAMES: dict[str, str] = {
    "sag_scale": "self_attention", "tome_ratio": "tomesd", "panorama": "panorama", "hires": "upscale",
    "vae": "vae", "embeddings": "embeddings_model", "safety_check": "safety_checker", "translate": "multi_lingual",
    "enhance_prompt": "enhance_prompt",
}
UPSCALE_FACTORS = (2, 3, 4)  # `upscale`: "yes" is 2; the other endpoints' "2"/"3"/"4" are accepted too
PANORAMA_RATIO = 4  # panorama: width = 4 × the requested height (diffusers' 512 → 2048), within [limits] max_width
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
    upscale_denoising: float = 0.55  # `upscale`: the latent second pass's denoising strength
    upscale_steps: int = 0  # `upscale`: the second pass's steps (0: as many as the first)

    @classmethod
    def from_config(cls, raw: dict | None) -> "Settings":
        section = dict((raw or {}).get("modelslab", {}) or {})
        s = cls()
        try:
            for name, kind in (("sync_wait", float), ("max_steps", int), ("max_queued", int),
                               ("webhook_timeout", float), ("expiry_hours", float), ("upscale_denoising", float),
                               ("upscale_steps", int)):
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
        if not 0 < s.upscale_denoising <= 1 or s.upscale_steps < 0:
            raise ConfigError("[modelslab]: 0 < upscale_denoising ≤ 1 and upscale_steps ≥ 0")
        return s

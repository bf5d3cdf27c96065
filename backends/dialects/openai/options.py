"""The OpenAI Images tables, as data (docs/reference/openai_images.md): the operations and paths, the model names
and their rules, the size and field limits, what `quality` and `style` mean here, the seed range, and the
`[openai]` config table. Nothing here does I/O."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ...config import ConfigError
from ...job import SdgateError
from ...samplers import resolve_sampler
from ...seeds import SeedRange
from ...styles import styles_path

log = logging.getLogger(__name__)

OPERATIONS = ("generations", "edits", "variations")
PATH = "/v1/images/{operation}"  # upstream; we also answer without the /v1 (the SDK never adds it: §0)
FILES = "/generations/openai"  # where `response_format: url` files are served (ModelsLab owns /generations/<name>)
EXTRA = "openai"  # the key of this dialect's own notes in Job.extra (read by this package only)

# The model names clients send (the `ImageModel` literal of the openai SDK 3.57, plus names it dropped): each maps
# to a local model through `[models.aliases]`; one that is not mapped runs the server's default model.
MODEL_NAMES = (
    "dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest",
    "gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare",
)


def is_gpt_image(model: str | None) -> bool:
    """GPT image models answer base64 only and report `usage`, `size`, `quality`, `background`."""
    return bool(model) and (model.startswith("gpt-image") or model.startswith("chatgpt-image"))


def is_dalle(model: str | None) -> bool:
    return bool(model) and model.startswith("dall-e")


# §1's per-model rules, enforced only with `[openai] strict = true` (lenient by default, §7).
STRICT_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("auto", "1024x1024", "1536x1024", "1024x1536"),
}
STRICT_MAX_PROMPT = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000}
MAX_PROMPT = 32000
MAX_N = 10
MAX_SEED = 4294967294
RANDOM_SEEDS = SeedRange(0, MAX_SEED)  # A1111's range: `seed` absent (or -1) draws one; image i uses seed + i

GRID = 8  # a WxH size is rounded to multiples of 8 (what the SD VAE needs), and the size made is reported
MIN_SIDE = 64
# `size: "auto"` (or none): the model family's native square; a model of unknown family: OpenAI's 1024x1024
NATIVE_SIDE = {"sd1": 512, "sd2": 768, "sdxl": 1024}
DEFAULT_SIDE = 1024

QUALITIES = ("auto", "standard", "hd", "low", "medium", "high", "xhigh", "max")
# quality → (steps, CFG scale). `steps` / `guidance_scale` extension fields override them; `[openai.quality]`
# replaces a row's steps (e.g. `hd = 50`).
QUALITY = {
    "low": (12, 6.0),
    "medium": (20, 7.0),
    "auto": (25, 7.0),
    "standard": (25, 7.0),
    "high": (35, 7.0),
    "hd": (40, 7.5),
    "xhigh": (45, 7.5),
    "max": (50, 7.5),
}
# `style` → a prompt style of styles.json (None: the prompt as sent). Applied only when the request names a style;
# the styled prompt is the answer's `revised_prompt`.
STYLE_PRESETS = {"vivid": "enhance", "natural": None}

OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
RESPONSE_FORMATS = ("url", "b64_json")
# img2img strength: edits (OpenAI's `input_fidelity` high keeps more of the input), variations
EDIT_STRENGTH = 0.75
HIGH_FIDELITY_STRENGTH = 0.5
VARIATION_STRENGTH = 0.6
MAX_BODY = 64 * 1024 * 1024  # 16 images of up to 4 MB, with room
RETRY_AFTER_BUSY = 5  # seconds, on a 429 for a full queue (the SDK waits for it when ≤ 120)


@dataclass
class Settings:
    """The `[openai]` config table."""

    sampler: str = "DPM++ 2M"
    schedule: Optional[str] = "Karras"
    default_response_format: str = "b64_json"  # when a request names none (OpenAI's DALL·E default is url)
    url_expiry_s: float = 3600.0  # how long a `url` answer's file is served
    public_url: str = ""  # the base URL callers reach us at behind a proxy (else the request's own)
    strict: bool = False  # enforce the per-model sizes, n and prompt lengths of §1
    quality: dict = field(default_factory=dict)  # quality → steps, over the QUALITY table
    styles_file: Optional[str] = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "Settings":
        raw = raw or {}
        section = dict(raw.get("openai", {}) or {})
        known = set(cls.__dataclass_fields__) - {"styles_file"}
        unknown = sorted(set(section) - known)
        if unknown:
            log.warning("[openai]: unknown keys ignored: %s", ", ".join(unknown))
        s = cls(**{k: v for k, v in section.items() if k in known})
        try:
            s.url_expiry_s = float(s.url_expiry_s)
            s.strict = s.strict if isinstance(s.strict, bool) else str(s.strict).lower() in ("1", "true", "yes")
            s.quality = {str(k): int(v) for k, v in dict(s.quality).items()}
            s.public_url = str(s.public_url or "").rstrip("/")
        except (TypeError, ValueError):
            raise ConfigError("[openai]: url_expiry_s must be a number and quality a table of step counts") from None
        if s.default_response_format not in RESPONSE_FORMATS:
            raise ConfigError(f"[openai] default_response_format: use one of {', '.join(RESPONSE_FORMATS)}")
        if any(q not in QUALITY or steps < 1 for q, steps in s.quality.items()):
            raise ConfigError(f"[openai.quality]: keys among {', '.join(QUALITY)}, values positive step counts")
        try:
            resolve_sampler(s.sampler, s.schedule)
        except SdgateError as e:
            raise ConfigError(f"[openai] sampler/schedule: {e.message}") from None
        s.styles_file = str(styles_path(dict(raw), "openai"))
        return s

    def steps_and_cfg(self, quality: str | None) -> tuple[int, float]:
        q = quality or "auto"
        steps, cfg = QUALITY[q]
        return self.quality.get(q, steps), cfg

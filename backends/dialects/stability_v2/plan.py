"""A parsed v2beta request → the Job it runs as: the model the endpoint stands for, the size from the aspect
ratio (or the init image's shape), the server's steps/sampler/guidance, the style preset's prompt template."""

from __future__ import annotations

import logging

from PIL import Image

from ...config import Limits
from ...images import UnreadableImage, open_image
from ...job import Job, ModelInfo
from ...styles import StyleStore
from .errors import bad_request
from .models import SD3Request, V2Request
from .options import INPUT_FORMATS, RANDOM_SEEDS, SD3_DEFAULT_CFG, SD3_FAST, nearest_aspect_ratio, output_size
from .settings import Settings

log = logging.getLogger(__name__)

EXTRA = "stability_v2"  # the key of this dialect's own notes in Job.extra (read by this package only)
DEFAULT_STRENGTH = 0.75


def model_names(endpoint: str, req: V2Request) -> list[str]:
    """The model names an endpoint stands for, tried in order: sd3's model (legacy names → 3.5), then "sd3";
    core/ultra: the endpoint's own name. They map to local models through `[models.aliases]`."""
    return [req.canonical_model, "sd3"] if isinstance(req, SD3Request) else [endpoint]


def decode_input_image(data: bytes, endpoint: str, limits: Limits | None = None) -> Image.Image:
    """The `image` file part → a loaded RGB image, with upstream's format and size rules (and `[limits]`)."""
    try:
        image = open_image(data, limits)
    except UnreadableImage as e:
        raise bad_request(f"image: could not be read as png, jpeg or webp ({e})") from None
    if image.format not in INPUT_FORMATS:
        raise bad_request(f"image: format {image.format} is not supported; use png, jpeg or webp")
    w, h = image.size
    if min(w, h) < 64:
        raise bad_request(f"image: every side must be at least 64 pixels (got {w}x{h})")
    if endpoint == "ultra" and (max(w, h) > 16384 or w * h < 4096):
        raise bad_request(f"image: sides must be 64..16384 with at least 4096 pixels (got {w}x{h})")
    return image.convert("RGB")


def to_job(endpoint: str, req: V2Request, model: ModelInfo, settings: Settings, styles: StyleStore,
           request_id: str, limits: Limits | None = None) -> Job:
    s = settings
    prompt, negative = req.prompt, req.negative_prompt
    if req.style_preset:
        if req.style_preset not in {st.name for st in styles.all()}:
            log.warning("style preset %r is not in %s; prompt left as is", req.style_preset, styles.path)
        prompt, negative = styles.apply(prompt, negative, [req.style_preset])
    init_image, strength = None, DEFAULT_STRENGTH
    if req.init_image is not None:
        init_image = decode_input_image(req.init_image, endpoint, limits)
        strength = float(req.strength)
        # the output follows the input's shape (aspect_ratio is text-to-image only), at the endpoint's size
        aspect = nearest_aspect_ratio(*init_image.size)
    else:
        aspect = req.aspect_ratio
    width, height = output_size(endpoint, aspect, model.family, s.size_scale)
    steps, cfg = s.steps, s.cfg_scale
    if isinstance(req, SD3Request):
        name = req.canonical_model
        steps = s.turbo_steps if name in SD3_FAST else s.steps
        cfg = req.cfg_scale if req.cfg_scale is not None else SD3_DEFAULT_CFG[name]
    fields = {k: v for k, v in req.model_dump(exclude={"image"}).items() if v is not None}
    return Job(
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=int(steps),
        cfg_scale=float(cfg),
        sampler=s.sampler,
        schedule=s.schedule,
        seed=req.seed or RANDOM_SEEDS.draw(),  # 0 = random; upstream reports the seed it drew
        model=model.title,
        prompt_weighting=True,  # upstream documents the (word:weight) syntax
        init_image=init_image,
        denoising_strength=strength,
        # the original request, for a same-style relay (upstream.py) and the infotext (replies.py)
        extra={EXTRA: {"endpoint": endpoint, "fields": fields, "request_id": request_id}},
    )

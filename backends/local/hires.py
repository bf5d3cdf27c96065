"""The second pass at a larger size (A1111's hires fix, ModelsLab's `upscale`): the first pass's latents (or
decoded images) resized, then denoised again by an image-to-image pipeline, with one generator per image seed.

As A1111 (docs/reference/a1111_features.md §4): the pass may use another checkpoint (`Hires.model`: its own
image-to-image pipeline and its own prompt encodings; the job's LoRAs are applied to it too), another sampler and
schedule, and its own prompts. Steps: `req` = `Hires.steps` or the first pass's; the scheduler is set for
`int(req / min(denoise, 0.999))` steps of which the last `req` run (diffusers' `strength` picks them). Variation
seeds apply again at the second pass's size (noise.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..job import Hires, InvalidRequest, Job
from ..samplers import SamplerChoice, resolve_sampler
from .loras import apply_loras
from .noise import batch_noise, override_noise
from .prompt_parser import strip_extra_networks
from .schedulers import make_scheduler
from .text_encoding import encode_prompts

# A1111's latent upscaler names → torch interpolation (mode, antialias). "Latent" is bilinear.
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# Pixel upscalers: the decoded image resized with Pillow, then encoded again by the image-to-image pipeline.
PIXEL_MODES: dict[str, int] = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST, "None": Image.LANCZOS}
MAX_DENOISE = 0.999  # A1111 divides the steps by min(denoise, 0.999)
MAX_SCHEDULE = 1000  # a tiny denoising strength must not ask for more steps than the model was trained with


def upscale_latents(latents: torch.Tensor, width: int, height: int, upscaler: str) -> torch.Tensor:
    mode, antialias = LATENT_MODES[upscaler]
    size = (height // 8, width // 8)
    if mode in ("nearest", "nearest-exact"):
        return F.interpolate(latents, size=size, mode=mode)
    return F.interpolate(latents, size=size, mode=mode, antialias=antialias)


def decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Latents → images, for a first pass that was stopped before its second pass could run."""
    vae = pipe.vae
    with torch.no_grad():
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def second_pass_steps(steps: int, denoise: float) -> tuple[int, float]:
    """A1111's rule → (num_inference_steps, strength) for diffusers, so that exactly `steps` steps run: diffusers
    runs int(total × strength), and the half step keeps float rounding from losing one."""
    total = int(steps / max(min(denoise, MAX_DENOISE), steps / MAX_SCHEDULE))
    total = max(total, steps)
    return total, min(1.0, (steps + 0.5) / total)


def check_hires_model(job: Job, models) -> None:
    """A hires checkpoint must share the model's latent space (its family); an unknown one is ModelNotFound."""
    if job.hires is None or not job.hires.model:
        return
    other, mine = models.resolve(job.hires.model).family, models.resolve(job.model).family
    if None not in (other, mine) and other != mine:
        raise InvalidRequest(f"hires checkpoint {job.hires.model!r} is {other}, the model is {mine}: the second "
                             f"pass needs the same latent space", details={"hr_checkpoint_name": job.hires.model})


@dataclass
class SecondPass:
    """What the second pass runs with: the image-to-image pipeline, its model, encodings and sampler."""

    pipe: object
    loaded: object
    embeds: dict
    choice: SamplerChoice


def hires_prompts(runs, hires: Hires) -> tuple[list[str], list[str]] | None:
    """The second pass's prompts per image, or None when every image keeps its first-pass prompts."""
    prompt = strip_extra_networks(hires.prompt)[0] if hires.prompt else None
    negative = strip_extra_networks(hires.negative_prompt)[0] if hires.negative_prompt else None
    if prompt is None and negative is None:
        return None
    prompts = [prompt if prompt is not None else run.prompt for run in runs for _ in range(run.job.batch_size)]
    negatives = [negative if negative is not None else run.negative
                 for run in runs for _ in range(run.job.batch_size)]
    return prompts, negatives


def prepare_second_pass(models, variant, lora_library, loaded, runs, embeds: dict,
                        choice: SamplerChoice) -> SecondPass:
    """The second pass of `runs` (one call's jobs, equal `Hires`): `variant(loaded, "img2img")` makes the
    image-to-image pipeline sharing a model's weights; `embeds` are the first pass's encodings."""
    job = runs[0].job
    hires = job.hires
    other = models.get(hires.model) if hires.model else loaded
    pipe = variant(other, "img2img")
    if other is not loaded:
        apply_loras(other.pipe, runs[0].loras, lora_library)
    if hires.sampler or hires.schedule:
        choice = resolve_sampler(hires.sampler or job.sampler, hires.schedule or job.schedule)
    texts = hires_prompts(runs, hires)
    if other is not loaded and texts is None:
        texts = ([run.prompt for run in runs for _ in range(run.job.batch_size)],
                 [run.negative for run in runs for _ in range(run.job.batch_size)])
    if texts is not None:
        embeds = encode_prompts(pipe, *texts, clip_skip=job.clip_skip, weighting=job.prompt_weighting)
    return SecondPass(pipe, other, embeds, choice)


def hires_pass(second: SecondPass, hires: Hires, first, seeds: list[int], job: Job, callback,
               noise=None) -> list[Image.Image]:
    """`first`: the first pass's latents (latent upscalers) or PIL images (pixel ones) → the final images.
    `noise`: the images' ImageNoise specs when some vary (variation seeds), else None (diffusers' own draw)."""
    cover_w, cover_h = hires.cover or (hires.width, hires.height)
    if hires.upscaler in LATENT_MODES:
        image = upscale_latents(first, cover_w, cover_h, hires.upscaler)
        left, top = (cover_w - hires.width) // 16, (cover_h - hires.height) // 16  # A1111: (cover − target) // 8 / 2
        image = image[:, :, top : top + hires.height // 8, left : left + hires.width // 8]
    else:
        resample = PIXEL_MODES.get(hires.upscaler, Image.LANCZOS)
        left, top = (cover_w - hires.width) // 2, (cover_h - hires.height) // 2
        image = [im.resize((cover_w, cover_h), resample).crop((left, top, left + hires.width, top + hires.height))
                 for im in first]
    total, strength = second_pass_steps(hires.steps or job.steps, hires.denoising_strength)
    pipe = second.pipe
    pipe.scheduler = make_scheduler(second.loaded.base_scheduler, second.choice, seed=seeds)
    if noise is not None:
        channels = pipe.unet.config.in_channels
        override_noise(pipe.scheduler, batch_noise(noise, channels, hires.width, hires.height))
    out = pipe(
        **second.embeds,
        image=image,
        strength=strength,
        num_inference_steps=total,
        guidance_scale=job.cfg_scale,
        eta=0.0 if job.eta is None else job.eta,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        callback_on_step_end=callback,
        output_type="pil",
    )
    return out.images

"""The second pass at a larger size (A1111's hires fix, ModelsLab's `upscale`): the first pass's latents (or
decoded images) resized, then denoised again by the image-to-image pipeline sharing the model's weights, with the
same prompt encodings and one generator per image seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from ..job import Hires, Job
from ..samplers import SamplerChoice
from .schedulers import make_scheduler

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


def hires_pass(img2img, loaded, hires: Hires, embeds: dict, first, seeds: list[int], choice: SamplerChoice,
               job: Job, callback) -> list[Image.Image]:
    """`first`: the first pass's latents (latent upscalers) or PIL images (pixel ones) → the final images."""
    if hires.upscaler in LATENT_MODES:
        image = upscale_latents(first, hires.width, hires.height, hires.upscaler)
    else:
        resample = PIXEL_MODES.get(hires.upscaler, Image.LANCZOS)
        image = [im.resize((hires.width, hires.height), resample) for im in first]
    steps = hires.steps or job.steps
    img2img.scheduler = make_scheduler(loaded.base_scheduler, choice, seed=seeds)
    out = img2img(
        **embeds,
        image=image,
        # diffusers runs int(steps × strength) steps and fails on zero; run at least one, as A1111 does
        strength=max(hires.denoising_strength, 1.0 / steps),
        num_inference_steps=steps,
        guidance_scale=job.cfg_scale,
        eta=0.0 if job.eta is None else job.eta,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        callback_on_step_end=callback,
        output_type="pil",
    )
    return out.images

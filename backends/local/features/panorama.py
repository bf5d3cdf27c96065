"""Panorama (`Job.panorama`): MultiDiffusion (https://huggingface.co/papers/2302.08113) as windowed denoising, for
SD1/SD2 and SDXL with any scheduler, LoRAs and VAE.

diffusers' `StableDiffusionPanoramaPipeline` (pipelines/deprecated/stable_diffusion_panorama) is a whole SD1/SD2
pipeline of its own: for each step it cuts the latents into 64×64 views at stride 8, runs the UNet and
`scheduler.step` on each view (with a deep copy of the scheduler's state per view) and averages the *stepped
latents* where views overlap. Here only the UNet's forward is replaced, for the length of the call, by one that
runs the original forward on overlapping windows and averages the *noise predictions*; the pipeline, its scheduler
and everything around it (SDXL's `added_cond_kwargs`, CFG, LoRAs, the VAE, callbacks) stay the ordinary ones.

The two are equal whenever the scheduler's step is linear in (sample, model output) with coefficients that do not
depend on the values: DDIM, Euler, LMS, DPM++ 2M, UniPC, PLMS (their multistep histories are linear too, and every
latent pixel has the same windows at every step). They differ for the stochastic samplers (Euler a, DPM++ SDE,
DDIM with eta): diffusers draws fresh noise per view and averages it, which shrinks the noise where views overlap;
here each latent pixel gets its noise once, from the job's own generator. Unlike diffusers' views, the windows here
always reach the last column and row (diffusers drops a remainder narrower than the stride), and the window is the
UNet's native `sample_size` (SDXL: 128 latents, stride 16), not a fixed 64.

The size is the dialect's business (ModelsLab: 4 × the height): this feature denoises the size the Job gives.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ...job import Job
from .base import Feature


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of windows of `window` over `length` at `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def windows(height: int, width: int, native: int) -> list[tuple[slice, slice]]:
    """The (rows, columns) latent windows: the UNet's native side (or the latent side if smaller), stride 1/8."""
    wh, ww = min(native, height), min(native, width)
    return [(slice(y, y + wh), slice(x, x + ww))
            for y in window_starts(height, wh, max(1, wh // 8))
            for x in window_starts(width, ww, max(1, ww // 8))]


def windowed_forward(unet):
    """A forward for `unet` that runs it on each window and averages the predictions where windows overlap.

    Each window goes through `unet(...)` itself (not the bare forward), so the UNet's hooks see the window as the
    input (tomesd's pre-hook reads the latent size from it); the inner call reaches the original forward."""
    original = unet.forward
    inner = threading.local()  # the UNet can be re-entered only by this thread's windows

    def forward(sample, *args, **kwargs):
        if getattr(inner, "active", False):
            return original(sample, *args, **kwargs)
        height, width = sample.shape[-2:]
        views = windows(height, width, int(unet.config.sample_size))
        if len(views) == 1:
            return original(sample, *args, **kwargs)
        total = torch.zeros(sample.shape, dtype=torch.float32, device=sample.device)
        count = torch.zeros((1, 1, height, width), dtype=torch.float32, device=sample.device)
        inner.active = True
        try:
            for rows, cols in views:
                out = unet(sample[..., rows, cols], *args, **kwargs)
                pred = out[0] if isinstance(out, tuple) else out.sample
                total[..., rows, cols] += pred.float()
                count[..., rows, cols] += 1
        finally:
            inner.active = False
        averaged = (total / count).to(sample.dtype)
        if not kwargs.get("return_dict", True):
            return (averaged,)
        return type(out)(sample=averaged)

    return forward


@contextlib.contextmanager
def patched_forward(module, forward):
    """`module.forward` replaced by an instance attribute for the block, then put back as it was (an instance
    attribute already there, e.g. accelerate's offload wrapper, is restored; otherwise the class's is used again)."""
    had = "forward" in module.__dict__
    before = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had:
            module.forward = before
        else:
            del module.forward


class Panorama(Feature):
    name = "panorama"
    openvino_ok = False  # the torch UNet's forward is replaced

    def wanted(self, job: Job) -> bool:
        return bool(job.panorama)

    def key(self, job: Job) -> tuple:
        return (True,)

    def call(self, runs, pipe, loaded):
        # pipe.unet is loaded.pipe.unet (variants share the weights), so the hires pass is windowed too
        unet = pipe.unet
        return patched_forward(unet, windowed_forward(unet))

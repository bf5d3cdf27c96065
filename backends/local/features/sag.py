"""Self-attention guidance (`Job.sag_scale`, https://huggingface.co/papers/2210.00939): diffusers'
`StableDiffusionSAGPipeline`, made once per model with `from_pipe` (sharing the weights, so LoRAs and a swapped VAE
apply), for text-to-image SD1/SD2 jobs.

Where it cannot run, the job runs without it and `Result.not_applied["sag_scale"]` says why: SDXL (diffusers has no
SAG pipeline for it), image-to-image, panorama (its attention mask would come from one UNet window only), and
samplers whose latents are not in DDPM's space with integer timesteps (Euler, Euler a, LMS, Heun, DPM2, DPM++ SDE:
the pipeline's x0 estimate indexes `alphas_cumprod` by timestep and refuses float timesteps). DDIM, DDPM, PLMS,
DPM++ 2M (and 2M SDE) and UniPC run it. A hires second pass runs without it (the image-to-image pipeline).

Its `__call__` (a deprecated pipeline, frozen at diffusers 0.33) predates `callback_on_step_end` and pipeline
interrupts: `SAGPipeline` takes the engine's arguments, feeds the step callback through the old `callback`, and
stops the loop when every job of the call asked to (the latents are then decoded as they stand, as the ordinary
pipeline does). It takes `eta` and one generator per image as they are.
"""

from __future__ import annotations

import copy

import torch
from diffusers import StableDiffusionSAGPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from ...job import InvalidRequest, Job
from ..hires import decode
from .base import Feature


class _Stop(Exception):
    """Raised from the step callback to leave the SAG loop early, carrying the latents so far."""

    def __init__(self, latents: torch.Tensor):
        super().__init__("interrupted")
        self.latents = latents


class SAGPipeline(StableDiffusionSAGPipeline):
    """diffusers' SAG pipeline taking the engine's call arguments (see the module's docstring)."""

    _interrupt = False
    num_timesteps = 0  # read by the engine's step callback for its progress total

    def __call__(self, *, callback_on_step_end=None, output_type="pil", **kwargs):
        self._interrupt = False
        self.num_timesteps = 0
        processors = self.unet.attn_processors  # SAG puts back its own only when the loop ends normally

        def callback(step, t, latents):
            self.num_timesteps = len(self.scheduler.timesteps)
            callback_on_step_end(self, step, t, {"latents": latents})
            if self._interrupt:
                raise _Stop(latents)

        if callback_on_step_end is not None:
            kwargs.update(callback=callback, callback_steps=1)
        try:
            return super().__call__(output_type=output_type, **kwargs)
        except _Stop as stop:
            images = stop.latents if output_type == "latent" else decode(self, stop.latents)
            return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)
        finally:
            self.unet.set_attn_processor(processors)


def reason_not_applied(job: Job, family: str, scheduler) -> str | None:
    """Why SAG cannot run for `job` on a model of `family` with `scheduler` (None: it can)."""
    if family == "sdxl":
        return "self-attention guidance is not available for SDXL models (diffusers has no SDXL SAG pipeline)"
    if job.init_image is not None:
        return "self-attention guidance runs on text-to-image only (diffusers has no image-to-image SAG pipeline)"
    if job.panorama:
        return "self-attention guidance does not combine with panorama (its mask would cover one UNet window)"
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(job.steps)
    if probe.timesteps.is_floating_point() or float(probe.init_noise_sigma) != 1.0:
        return (f"self-attention guidance needs a sampler with integer DDPM timesteps (DDIM, PLMS, DPM++ 2M, UniPC); "
                f"{job.sampler} ({type(scheduler).__name__}) is not one")
    return None


class SelfAttentionGuidance(Feature):
    name = "sag"

    def wanted(self, job: Job) -> bool:
        return job.sag_scale is not None

    def key(self, job: Job) -> tuple:
        return (float(job.sag_scale),)

    def check(self, job: Job) -> None:
        if not job.sag_scale >= 0:  # also refuses NaN
            raise InvalidRequest(f"sag_scale must be 0 or more, got {job.sag_scale}")

    def pipeline(self, run, loaded, pipe, kwargs):
        if reason_not_applied(run.job, loaded.family, pipe.scheduler) is not None:
            return pipe, kwargs  # call() records why, for every job of the call
        variants = loaded.variants
        if "sag" not in variants:
            variants["sag"] = SAGPipeline.from_pipe(loaded.pipe)
            variants["sag"].set_progress_bar_config(disable=True)
        sag = variants["sag"]
        # the engine puts this call's scheduler on the text-to-image pipeline; from_pipe copied an older one
        sag.scheduler = pipe.scheduler
        return sag, {**kwargs, "sag_scale": float(run.job.sag_scale)}

    def call(self, runs, pipe, loaded):
        for run in runs:
            why = reason_not_applied(run.job, loaded.family, pipe.scheduler)
            if why is not None:
                run.not_applied["sag_scale"] = why
        return super().call(runs, pipe, loaded)

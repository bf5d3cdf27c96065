"""The local engine: turns a Job into images with diffusers, on the worker thread that owns the device."""

from __future__ import annotations

import logging
import random
import time
from typing import Protocol

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image

from ..config import Limits
from ..job import InvalidRequest, Job, Lora, Result
from ..limits import check_job
from .loras import LoraLibrary, apply_loras
from .models import ModelManager
from .previews import latent_preview
from .prompt_parser import strip_extra_networks
from ..samplers import resolve_sampler
from .schedulers import make_scheduler
from .text_encoding import encode_prompts

log = logging.getLogger(__name__)

MAX_SEED = 4294967294  # A1111 draws random seeds below this


class Control(Protocol):
    """What the engine needs from whoever runs it (the queue's Ticket implements it)."""

    interrupted: bool
    skipped: bool

    def report(self, step: int, steps: int, batch_no: int, preview: Image.Image | None = None) -> None: ...


class _NoControl:
    interrupted = False
    skipped = False

    def report(self, step, steps, batch_no, preview=None):
        pass


def loras_from_tags(networks: list[tuple[str, list[str]]]) -> list[Lora]:
    """[("lora", ["name", "0.8"]), ...] → Loras; other network types (hypernet, ...) are not supported."""
    loras = []
    for kind, args in networks:
        if kind != "lora":
            log.warning("ignoring unsupported extra network <%s:%s>", kind, ":".join(args))
            continue
        try:
            weight = float(args[1]) if len(args) > 1 and args[1] else 1.0
        except ValueError:
            raise InvalidRequest(f"<lora:{':'.join(args)}>: the weight must be a number") from None
        loras.append(Lora(args[0], weight))
    return loras


def resolve_seeds(seed: int | None, count: int) -> list[int]:
    """A1111's rule: -1 (or None) draws a random seed; image i uses seed + i."""
    if seed is None or int(seed) < 0:
        seed = random.randrange(MAX_SEED)
    return [int(seed) + i for i in range(count)]


class LocalEngine:
    def __init__(self, models: ModelManager, limits: Limits | None = None):
        self.models = models
        self.limits = limits or Limits()
        self.loras = LoraLibrary(models.models_dir)

    def validate(self, job: Job) -> None:
        check_job(job, self.limits)

    def generate(self, job: Job, control: Control | None = None) -> Result:
        control = control or _NoControl()
        t_start = time.perf_counter()
        self.validate(job)
        choice = resolve_sampler(job.sampler, job.schedule)
        loaded = self.models.get(job.model)
        pipe, image_kwargs = self._pipeline_for(job, loaded)
        t_loaded = time.perf_counter()

        seeds = resolve_seeds(job.seed, job.image_count)
        # `<lora:name:weight>` tags in the prompt (A1111) add to the job's own LoRA list (ModelsLab, UI).
        prompt, networks = strip_extra_networks(job.prompt)
        negative, _ = strip_extra_networks(job.negative_prompt)
        loras = job.loras + loras_from_tags(networks)
        apply_loras(loaded.pipe, loras, self.loras)

        # every batch of a job has the same prompts: encode them once
        embeds = encode_prompts(
            pipe,
            [prompt] * job.batch_size,
            [negative] * job.batch_size,
            clip_skip=job.clip_skip,
            weighting=job.prompt_weighting,
        )
        t_encoded = time.perf_counter()

        images: list[Image.Image] = []
        interrupted = skipped = False
        timings = {"load": t_loaded - t_start, "encode": t_encoded - t_loaded, "denoise": 0.0}
        for batch_no in range(job.n_iter):
            if control.interrupted:
                interrupted = True
                break
            control.skipped = False
            batch_seeds = seeds[batch_no * job.batch_size : (batch_no + 1) * job.batch_size]
            t1 = time.perf_counter()
            pipe.scheduler = make_scheduler(loaded.base_scheduler, choice, seed=batch_seeds)
            out = pipe(
                **embeds,
                **image_kwargs,
                width=job.width,
                height=job.height,
                num_inference_steps=job.steps,
                guidance_scale=job.cfg_scale,
                eta=0.0 if job.eta is None else job.eta,
                generator=[torch.Generator("cpu").manual_seed(s) for s in batch_seeds],
                callback_on_step_end=self._step_callback(job, control, batch_no, loaded.family),
                output_type="pil",
            )
            t2 = time.perf_counter()
            timings["denoise"] += t2 - t1
            images.extend(out.images)
            if control.interrupted:
                interrupted = True
                break
            skipped = skipped or control.skipped

        timings["total"] = time.perf_counter() - t_start
        return Result(
            job=job,
            images=images,
            seeds=seeds[: len(images)],
            model=loaded.info,
            sampler=choice.name,
            schedule=choice.schedule,
            scheduler_class=choice.scheduler_class,
            notes=list(choice.notes),
            loras=loras,
            interrupted=interrupted,
            skipped=skipped,
            timings=timings,
            finished_at=time.time(),
        )

    @staticmethod
    def _pipeline_for(job: Job, loaded) -> tuple[object, dict]:
        """The text-to-image pipeline, or an image-to-image / inpainting one sharing its weights."""
        if job.init_image is None:
            return loaded.pipe, {}
        init = job.init_image.convert("RGB").resize((job.width, job.height), Image.LANCZOS)
        # diffusers runs int(steps × strength) steps and fails on zero; A1111 always runs at least one.
        kwargs = {"image": init, "strength": max(job.denoising_strength, 1.0 / job.steps)}
        if job.mask is None:
            kind, factory = "img2img", AutoPipelineForImage2Image
        else:
            kind, factory = "inpaint", AutoPipelineForInpainting
            kwargs["mask_image"] = job.mask.convert("L").resize((job.width, job.height), Image.LANCZOS)
            if job.mask_crop_padding is not None:
                kwargs["padding_mask_crop"] = job.mask_crop_padding
        variants = loaded.variants
        if kind not in variants:
            variants[kind] = factory.from_pipe(loaded.pipe)
            variants[kind].set_progress_bar_config(disable=True)
        return variants[kind], kwargs

    @staticmethod
    def _step_callback(job: Job, control: Control, batch_no: int, family: str):
        def on_step_end(pipe, i, _t, kwargs):
            steps = pipe.num_timesteps or job.steps
            step = i + 1
            preview = None
            if job.preview_every and step % job.preview_every == 0 and step < steps:
                preview = latent_preview(kwargs["latents"], family)
            control.report(step, steps, batch_no, preview)
            if control.interrupted or control.skipped:
                # diffusers skips the remaining steps and decodes the latents as they stand.
                pipe._interrupt = True
            return kwargs

        return on_step_end

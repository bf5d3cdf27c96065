"""The local engine: turns a Job into images with diffusers, on the worker thread that owns the device."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image

from ..config import Features, Limits
from ..job import InvalidRequest, Job, Lora, Result
from .features import Feature, Setup, make_features
from .composable import conditioning_applied, encode_plans, run_plans
from .hires import LATENT_MODES, PIXEL_MODES, check_hires_model, decode, hires_pass, prepare_second_pass
from ..limits import check_job
from .loras import LoraLibrary, apply_loras
from .models import ModelManager
from .noise import ImageNoise, batch_noise, resize_from
from .previews import latent_preview
from .prompt_parser import strip_extra_networks
from .refiner import check_refiner, refine, switch_point, why_not
from ..samplers import SamplerChoice, resolve_sampler
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


def resolve_seeds(seed: int | None, count: int, varied: bool = False) -> list[int]:
    """A1111's rule: -1 (or None) draws a random seed; image i uses seed + i, or `seed` itself when a variation
    strength is set (the images then differ by their variation seeds)."""
    if seed is None or int(seed) < 0:
        seed = random.randrange(MAX_SEED)
    return [int(seed) + (0 if varied else i) for i in range(count)]


def job_seeds(job: Job) -> tuple[list[int], list[int]]:
    """Every image's seed and variation seed (A1111's all_seeds, all_subseeds), random ones drawn now."""
    return (resolve_seeds(job.seed, job.image_count, job.subseed_strength != 0),
            resolve_seeds(job.subseed, job.image_count))


def still_running(members: list[tuple]) -> list[tuple]:
    """The (run, control) pairs whose job was not interrupted between batches; the others are marked done."""
    live = []
    for run, control in members:
        if control.interrupted:  # stopped between batches: nothing more to run
            run.interrupted = True
        else:
            live.append((run, control))
    return live


class LocalEngine:
    def __init__(self, models: ModelManager, limits: Limits | None = None, cpu_engine: str = "torch",
                 threads: int | None = None, features: Features | None = None):
        self.models = models
        self.limits = limits or Limits()
        self.loras = LoraLibrary(models.models_dir)
        self.features: list[Feature] = make_features(
            Setup(models.models_dir, features or Features(), models.device, models.dtype, models.file_sha256))
        self.openvino = None  # the UNet and VAE on OpenVINO (`cpu_engine = "openvino"`, CPU only): openvino.py
        if cpu_engine == "openvino" and models.device.type == "cpu":
            from .openvino import CACHE_NAME, OpenVinoRunner

            self.openvino = OpenVinoRunner(models.models_dir / CACHE_NAME, models.dtype, threads)

    def validate(self, job: Job) -> None:
        check_job(job, self.limits)
        if job.hires is not None and job.hires.upscaler not in {**LATENT_MODES, **PIXEL_MODES}:
            raise InvalidRequest(f"unknown hires upscaler {job.hires.upscaler!r}; valid: "
                                 f"{', '.join([*LATENT_MODES, *PIXEL_MODES])}")
        check_refiner(job, self.models)
        check_hires_model(job, self.models)
        for feature in self.wanted(job):
            feature.check(job)

    def wanted(self, job: Job) -> list[Feature]:
        return [f for f in self.features if f.wanted(job)]

    # ------------------------------------------------------------------------------------ one job, batch by batch

    def generate(self, job: Job, control: Control | None = None) -> Result:
        """Run a whole job alone (the queue runs jobs batch by batch instead, sharing calls: `run_batch`)."""
        control = control or _NoControl()
        run = self.start(job)
        while not run.done:
            self.run_batch([(run, control)])
        return run.result()

    def batch_key(self, job: Job) -> tuple | None:
        """Jobs with equal keys can share one pipeline call (each image keeps its own seed and generator, so it
        is what its job gets alone): text-to-image on the same model, LoRAs, size, steps, sampler and schedule,
        CFG and eta. Every scheduler here is batch-invariant: the ancestral ones draw from the per-image
        generators, and DPM++ SDE gets one Brownian tree per image seed (schedulers.py)."""
        if job.init_image is not None:
            return None
        choice = resolve_sampler(job.sampler, job.schedule)
        model = self.models.resolve(job.model)
        _, networks = strip_extra_networks(job.prompt)
        loras = tuple((lora.name, float(lora.weight)) for lora in job.loras + loras_from_tags(networks))
        keys = ((f.name, f.key(job)) for f in self.wanted(job))
        features = tuple((name, key) for name, key in keys if key is not None)
        return (model.source, loras, job.width, job.height, job.steps, choice.key, float(job.cfg_scale),
                job.eta, job.mask is None, job.hires, job.refiner, features)

    def start(self, job: Job) -> "Run":
        """Check `job` and make its run: seeds drawn, prompt tags read. The model is loaded by the first batch."""
        t_start = time.perf_counter()
        self.validate(job)
        choice = resolve_sampler(job.sampler, job.schedule)
        prompt, networks = strip_extra_networks(job.prompt)
        negative, _ = strip_extra_networks(job.negative_prompt)
        seeds, subseeds = job_seeds(job)
        run = Run(job=job, choice=choice, seeds=seeds, subseeds=subseeds, prompt=prompt,
                  negative=negative, loras=job.loras + loras_from_tags(networks), t_start=t_start,
                  info=self.models.resolve(job.model), features=self.wanted(job))
        run.as_written = (prompt, negative)
        for feature in run.features:
            feature.rewrite(run)
        return run

    def run_batch(self, members: list[tuple["Run", Control]]) -> None:
        """The next batch of every run, in one pipeline call per group of runs whose prompts encode to the same
        shape (the caller only puts runs with one `batch_key` together)."""
        live = still_running(members)
        if not live:
            return
        loaded = self.models.get(live[0][0].job.model)
        apply_loras(loaded.pipe, live[0][0].loras, self.loras)
        for run, _ in live:
            run.prepare(loaded)
        groups: dict[tuple, list] = {}
        for run, control in live:
            groups.setdefault(run.shape, []).append((run, control))
        for group in groups.values():
            self._call(loaded, group)

    def _call(self, loaded, group: list[tuple["Run", Control]]) -> None:
        lead = group[0][0]
        job = lead.job
        seeds = [s for run, _ in group for s in run.next_seeds()]
        noise = [spec for run, _ in group for spec in run.next_noise()]  # variation seeds (noise.py)
        varied = any(spec.varies for spec in noise) and job.init_image is None
        refining = switch_point(job.refiner) is not None and why_not(job, loaded.family) is None
        for run, _ in group:
            run.note_unapplied(loaded.family)
        embeds = {k: torch.cat([run.embeds[k] for run, _ in group]) for k in lead.embeds}
        t1 = time.perf_counter()
        lead.pipe.scheduler = make_scheduler(loaded.base_scheduler, lead.choice, seed=seeds)
        kwargs = dict(
            **embeds,
            **lead.image_kwargs,
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.cfg_scale,
            eta=0.0 if job.eta is None else job.eta,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            callback_on_step_end=self._step_callback(group, loaded.family),
            # a latent hires pass goes on from the latents
            output_type="latent" if job.hires is not None and job.hires.upscaler.startswith("Latent") else "pil",
        )
        if varied:  # each image's own starting noise; the generators are left one draw on, as diffusers leaves them
            latents = batch_noise(noise, lead.pipe.unet.config.in_channels, job.width, job.height, kwargs["generator"])
            kwargs["latents"] = latents.to(lead.pipe.unet.dtype)
        if refining:  # the base stops at the switch point and hands its latents to the refiner
            kwargs.update(denoising_end=switch_point(job.refiner), output_type="latent")
        pipe = lead.pipe
        for feature in lead.features:
            pipe, kwargs = feature.pipeline(lead, loaded, pipe, kwargs)
        runs = [run for run, _ in group]
        # prompt editing / AND (composable.py) replace the torch UNet's forward: such calls stay on torch
        planned = any(run.prompt_plan or run.hires_plan for run in runs)
        ov = None
        if self.openvino is not None and all(f.openvino_ok for f in lead.features) and not planned:
            ov = self.openvino.attach(loaded, pipe, lead.loras)
        with contextlib.ExitStack() as stack:
            for feature in lead.features:
                stack.enter_context(feature.call(runs, pipe, loaded))
            if ov is not None:
                stack.enter_context(ov.applied(pipe))
            swap = None
            if planned:
                cfg = job.cfg_scale > 1 and pipe.unet.config.time_cond_proj_dim is None  # as the pipelines decide
                swap = stack.enter_context(
                    conditioning_applied(pipe, [(run.prompt_plan, run.job.batch_size) for run in runs], cfg))
            images = pipe(**kwargs).images
            stopped = all(c.interrupted or c.skipped for _, c in group)
            if job.hires is not None and not stopped:
                if swap is not None:  # the hires pass restarts the call counter with its own schedules
                    swap.start_pass([run.hires_plan for run in runs])
                second = prepare_second_pass(self.models, self._variant, self.loras, loaded, runs, embeds,
                                             lead.choice)
                images = hires_pass(second, job.hires, images, seeds, job, self._step_callback(group, loaded.family),
                                    noise if varied else None)
            elif refining and not stopped:
                images = refine(self.models, self._variant, runs, images, seeds, kwargs["generator"], lead.choice,
                                job, self._step_callback(group, loaded.family))
            elif kwargs["output_type"] == "latent":
                images = decode(pipe, images)
        seconds = time.perf_counter() - t1
        notes = ov.notes if ov is not None else []
        if self.openvino is not None and ov is None:
            torch_only = [f.name for f in lead.features if not f.openvino_ok] + (["prompt editing"] if planned else [])
            notes = [f"{', '.join(torch_only)} runs on torch, not OpenVINO"]
        at = 0
        for run, control in group:
            n = run.job.batch_size
            mine = list(images[at : at + n])
            for feature in run.features:
                mine = feature.finish(run, mine, loaded)
            run.images.extend(mine)
            at += n
            run.timings["denoise"] += seconds
            run.notes.extend(notes)
            run.batch_no += 1
            run.interrupted = run.interrupted or control.interrupted
            run.skipped = run.skipped or control.skipped
            control.skipped = False  # a skip ends one batch; the next starts afresh
            run.batched = max(run.batched, len(seeds))

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
        return LocalEngine._variant(loaded, kind, factory), kwargs

    @staticmethod
    def _variant(loaded, kind: str, factory=AutoPipelineForImage2Image):
        """A pipeline of another kind sharing the loaded model's weights, made once per model."""
        variants = loaded.variants
        if kind not in variants:
            variants[kind] = factory.from_pipe(loaded.pipe)
            variants[kind].set_progress_bar_config(disable=True)
        return variants[kind]

    @staticmethod
    def _step_callback(group: list[tuple["Run", Control]], family: str):
        """Progress and previews for each job of the call. The call stops early only when every job in it asks
        to (interrupt or skip): a job sharing a call with others must not change their images."""

        def on_step_end(pipe, i, _t, kwargs):
            steps = pipe.num_timesteps or group[0][0].job.steps
            step = i + 1
            at = 0
            for run, control in group:
                n = run.job.batch_size
                preview = None
                if run.job.preview_every and step % run.job.preview_every == 0 and step < steps:
                    preview = latent_preview(kwargs["latents"][at : at + n], family)
                control.report(step, steps, run.batch_no, preview)
                at += n
            if all(control.interrupted or control.skipped for _, control in group):
                # diffusers skips the remaining steps and decodes the latents as they stand.
                pipe._interrupt = True
            return kwargs

        return on_step_end


@dataclass
class Run:
    """One job on its way through the engine: started once, then run one batch at a time, alone or sharing a
    pipeline call with other jobs' batches (backends/queue.py)."""

    job: Job
    choice: SamplerChoice
    seeds: list[int]
    subseeds: list[int]  # A1111's all_subseeds: subseed + i, drawn even when no variation strength uses them
    prompt: str
    negative: str
    loras: list[Lora]
    t_start: float
    info: object  # the ModelInfo (a Result names it even when no batch ran)
    batch_no: int = 0  # batches run so far
    images: list[Image.Image] = field(default_factory=list)
    interrupted: bool = False
    skipped: bool = False
    batched: int = 1  # the most images one of its calls made (the job's own and its batch-mates')
    loaded: object = None
    pipe: object = None
    image_kwargs: dict = field(default_factory=dict)
    embeds: dict = field(default_factory=dict)
    prompt_plan: object = None  # prompt editing / AND per call (composable.PromptPlan); None: a plain prompt
    hires_plan: object = None  # the same for the hires pass
    notes: list[str] = field(default_factory=list)  # which engine ran its calls (OpenVINO or torch, and why)
    features: list = field(default_factory=list)  # the engine features this job uses (features/)
    not_applied: dict = field(default_factory=dict)  # what a feature could not do for this job, and why
    nsfw: list | None = None  # the safety checker's verdicts so far; None: no check ran
    params: dict = field(default_factory=dict)  # infotext keys the engine and its features add (Result.params)
    as_written: tuple = ()  # (prompt, negative) before the features' rewrites (translation, enhancement)
    timings: dict = field(default_factory=lambda: {"load": 0.0, "encode": 0.0, "denoise": 0.0})

    @property
    def done(self) -> bool:
        return self.interrupted or self.batch_no >= self.job.n_iter

    @property
    def shape(self) -> tuple:
        return tuple((k, tuple(v.shape[1:])) for k, v in sorted(self.embeds.items()))

    def next_seeds(self) -> list[int]:
        n = self.job.batch_size
        return self.seeds[self.batch_no * n : (self.batch_no + 1) * n]

    def next_noise(self) -> list[ImageNoise]:
        n, job = self.job.batch_size, self.job
        at = self.batch_no * n
        return [ImageNoise(seed, subseed, float(job.subseed_strength or 0), resize_from(job.seed_resize_from))
                for seed, subseed in zip(self.seeds[at : at + n], self.subseeds[at : at + n])]

    def note_unapplied(self, family: str) -> None:
        """What this job asked for that its call cannot do on a model of `family`."""
        reason = why_not(self.job, family)
        if reason:
            self.not_applied["refiner"] = reason
        if self.job.init_image is not None and any(spec.varies for spec in self.next_noise()):
            for name in ("subseed_strength", "seed_resize_from"):
                if getattr(self.job, name):
                    self.not_applied[name] = "variation seeds apply to text-to-image (and its hires pass) only"

    def prepare(self, loaded) -> None:
        """Pipeline and prompt encodings for `loaded` (again only if the model was swapped out meanwhile). Every
        batch of a job has the same prompts: they are encoded once. The job's LoRAs are active (run_batch)."""
        if self.loaded is loaded:
            return
        t0 = time.perf_counter()
        self.loaded = loaded
        self.pipe, self.image_kwargs = LocalEngine._pipeline_for(self.job, loaded)
        t1 = time.perf_counter()
        n = self.job.batch_size
        with contextlib.ExitStack() as stack:
            for feature in self.features:
                stack.enter_context(feature.encoding(self, self.pipe))
            # prompt editing / AND (composable.py); `texts`: the prompts with the constructs read (a plain one's own)
            self.prompt_plan, self.hires_plan, texts = run_plans(self.job, self.prompt, self.negative, self.choice)
            plans = [p for p in (self.prompt_plan, self.hires_plan) if p is not None]
            encoding = {"clip_skip": self.job.clip_skip, "weighting": self.job.prompt_weighting}
            if plans:  # every text of every step once
                self.embeds = encode_plans(self.pipe, plans, texts, n, **encoding)
            else:
                self.embeds = encode_prompts(self.pipe, [texts[0]] * n, [texts[1]] * n, **encoding)
        self.timings["load"] += t1 - t0
        self.timings["encode"] += time.perf_counter() - t1

    def result(self) -> Result:
        job = self.job
        timings = {**self.timings, "total": time.perf_counter() - self.t_start}
        notes = list(dict.fromkeys([*self.choice.notes, *self.notes]))
        return Result(
            job=job,
            images=list(self.images),
            seeds=self.seeds[: len(self.images)],
            model=self.loaded.info if self.loaded is not None else self.info,
            sampler=self.choice.name,
            schedule=self.choice.schedule,
            scheduler_class=self.choice.scheduler_class,
            notes=notes,
            loras=self.loras,
            interrupted=self.interrupted,
            skipped=self.skipped,
            timings=timings,
            finished_at=time.time(),
            batched=self.batched,
            nsfw=self.nsfw,
            prompt=self.prompt if self.as_written and self.prompt != self.as_written[0] else None,
            negative_prompt=self.negative if self.as_written and self.negative != self.as_written[1] else None,
            not_applied=dict(self.not_applied),
            subseeds=self.subseeds[: len(self.images)],
            params=dict(self.params),
        )

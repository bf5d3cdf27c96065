"""A checked ModelsLab request → a Job and the `meta` every answer carries (pure: the model is already resolved),
and what the style writes into the images: the upscale (a 2× Lanczos resize here) and the infotext."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ...infotext import create_infotext
from ...job import InvalidRequest, Job, ModelInfo, Result, Style, UnknownSampler
from ...samplers import resolve_sampler
from .models import Text2ImgRequest, parse_loras, yes_no
from .options import NOT_APPLIED_FLAGS, NOT_APPLIED_VALUES, OUTPUT_DIR, RANDOM_SEEDS, SCHEDULERS, Settings


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
    by the engine, so that `meta.seed` is concrete even in a `processing` answer. Where the Job runs is stamped by
    the dialect (`job_for_route`)."""
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
    seed = req.seed if req.seed is not None else RANDOM_SEEDS.draw(rng=rng)
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
        style=Style.MODELSLAB,
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
    """A1111-style generation parameters for the PNG (quoted where a value holds a comma, a colon or a line
    break), so any PNG-info tool reads the files back."""
    return create_infotext(job.prompt, job.negative_prompt, {
        "Steps": job.steps,
        "Sampler": result.scheduler_class,
        "Schedule type": result.schedule,
        "CFG scale": f"{job.cfg_scale:g}",
        "Seed": result.seeds[0] if result.seeds else job.seed,
        "Size": f"{job.width}x{job.height}",
        "Model hash": result.model.hash,
        "Model": result.model.name,
        "Clip skip": job.clip_skip if job.clip_skip > 1 else None,
    })


def output_images(plan: Plan, result: Result) -> list[Image.Image]:
    """The images as ModelsLab returns them: `upscale` is a 2x Lanczos resize here (meta says so)."""
    if not plan.upscale:
        return result.images
    return [im.resize((im.width * 2, im.height * 2), Image.LANCZOS) for im in result.images]

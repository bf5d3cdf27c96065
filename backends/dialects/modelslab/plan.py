"""A checked ModelsLab request → a Job and the `meta` every answer carries (pure: the model is already resolved),
the `meta` a finished job's Result completes, and the infotext written into the images.

The switches are the engine's features (backends/local/features/): `panorama` (MultiDiffusion at PANORAMA_RATIO ×
the height), `self_attention` (SAG at `[features] sag_scale`), `tomesd` (`[features] tome_ratio`), `upscale` (a
latent second pass at 2×, or "3"/"4"), `vae`, `embeddings_model`, `safety_checker`, `multi_lingual` (translated to
English first), `enhance_prompt` (quality phrases added)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ...config import Features
from ...infotext import create_infotext
from ...job import Hires, InvalidRequest, Job, ModelInfo, Result, Style, UnknownSampler
from ...samplers import resolve_sampler
from .models import Text2ImgRequest, parse_loras, split_names, yes_no
from .options import (
    JOB_FIELD_NAMES,
    NOT_APPLIED_FLAGS,
    NOT_APPLIED_VALUES,
    OUTPUT_DIR,
    PANORAMA_RATIO,
    RANDOM_SEEDS,
    SCHEDULERS,
    Settings,
)


@dataclass
class Plan:
    """A checked request, translated: the Job plus what the response needs that a Job does not carry."""

    job: Job
    meta: dict[str, Any]
    base64: bool
    instant: bool
    webhook: str | None
    track_id: Any


def build_plan(
    req: Text2ImgRequest,
    *,
    model: ModelInfo,
    model_id: str | None,
    settings: Settings,
    features: Features | None = None,
    max_width: int = 2048,
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
    panorama = bool(req.value("panorama"))
    if panorama:  # a wide image from the requested height
        width = min(PANORAMA_RATIO * height, max_width // 8 * 8)
    loras = parse_loras(req.lora_model, req.lora_strength)
    features = features or Features()
    factor = req.value("upscale")
    hires = None
    if factor:
        hires = Hires(width * factor, height * factor, "Latent", settings.upscale_steps, settings.upscale_denoising)

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
        vae=(req.vae or "").strip() or None,
        embeddings=split_names(req.embeddings_model),
        panorama=panorama,
        sag_scale=features.sag_scale if req.value("self_attention") else None,
        tome_ratio=features.tome_ratio if req.value("tomesd") else None,
        hires=hires,
        safety_check=bool(req.value("safety_checker")),
        translate="auto" if req.value("multi_lingual") else None,
        enhance_prompt=bool(req.value("enhance_prompt")),
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
        "upscale": "no" if not factor else ("yes" if factor == 2 else str(factor)),
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
    if hires is not None:
        meta["upscaler"] = f"latent {factor}x second pass (denoising {hires.denoising_strength:g})"
        meta["output_width"], meta["output_height"] = hires.width, hires.height
    if req.model_extra:
        meta["ignored_fields"] = sorted(req.model_extra)
    return Plan(
        job=job,
        meta=meta,
        base64=bool(req.value("base64")),
        instant=bool(req.value("instant_response")),
        webhook=(req.webhook or "").strip() or None,
        track_id=req.track_id,
    )


def infotext(job: Job, result: Result) -> str:
    """A1111-style generation parameters for the PNG (quoted where a value holds a comma, a colon or a line
    break), so any PNG-info tool reads the files back: the prompts as encoded, the second pass as A1111 writes it."""
    hires = job.hires
    return create_infotext(result.prompt or job.prompt,
                           job.negative_prompt if result.negative_prompt is None else result.negative_prompt, {
        "Steps": job.steps,
        "Sampler": result.scheduler_class,
        "Schedule type": result.schedule,
        "CFG scale": f"{job.cfg_scale:g}",
        "Seed": result.seeds[0] if result.seeds else job.seed,
        "Size": f"{job.width}x{job.height}",
        "Model hash": result.model.hash,
        "Model": result.model.name,
        "VAE": job.vae,
        "Clip skip": job.clip_skip if job.clip_skip > 1 else None,
        "Denoising strength": f"{hires.denoising_strength:g}" if hires else None,
        "Hires upscale": f"{hires.width / job.width:g}" if hires else None,
        "Hires upscaler": hires.upscaler if hires else None,
        "ToMe ratio": f"{job.tome_ratio:g}" if job.tome_ratio and "tome_ratio" not in result.not_applied else None,
        "SAG scale": f"{job.sag_scale:g}" if job.sag_scale and "sag_scale" not in result.not_applied else None,
    })


def result_meta(meta: dict[str, Any], result: Result) -> dict[str, Any]:
    """The plan's `meta` completed by what the job did: the prompts as encoded (translated, enhanced), the seeds,
    the scheduler, the model, the safety verdicts and what a switch could not do for this job (a new dict: a fetch
    on the event loop may be serialising the old one right now)."""
    out = {
        **meta,
        "seed": result.seeds[0] if result.seeds else meta["seed"],
        "seeds": list(result.seeds),
        "scheduler": result.scheduler_class,
        "model": result.model.title,
        "notes": list(dict.fromkeys([*meta["notes"], *result.notes])),
        "not_applied": {**meta["not_applied"],
                        **{JOB_FIELD_NAMES.get(k, k): why for k, why in result.not_applied.items()}},
    }
    if result.prompt is not None:
        out["original_prompt"], out["prompt"] = meta["prompt"], result.prompt
    if result.negative_prompt is not None:
        out["original_negative_prompt"], out["negative_prompt"] = meta["negative_prompt"], result.negative_prompt
    if result.nsfw is not None:
        out["nsfw_content_detected"] = list(result.nsfw)
    return out


def nsfw_detected(job: Job, result: Result) -> bool | None:
    """The answer's `nsfw_content_detected`: the checker's verdict when it ran; None when the caller asked for a
    check that could not run (meta.not_applied says why); False when no check was asked for."""
    if result.nsfw is not None:
        return any(result.nsfw)
    return None if job.safety_check else False

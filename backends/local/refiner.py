"""SDXL's refiner (A1111's refiner_checkpoint / refiner_switch_at, docs/reference/a1111_features.md §5): the base
model denoises up to `switch_at` (diffusers' `denoising_end`) and hands over its latents; the refiner's
image-to-image pipeline finishes them from `denoising_start=switch_at` over the same number of steps, with the
prompts encoded by its own text encoders and the same per-image generators (ancestral noise goes on from where
the base left it).

As A1111's default, switch_at is the point on the model's timestep scale (t ≤ 999 − 1000·s), which is what
diffusers' denoising_end/start mean; 1.0 never switches (the refiner does not run and the infotext does not name
it). Differences: diffusers restarts the scheduler at the switch where A1111 continues one sampler run (A1111
notes small differences too); a refiner with hires fix is not applied (A1111's default refines the second pass);
switch_at ≤ 0 hands over after the base's first step rather than before it.
"""

from __future__ import annotations

from ..job import InvalidRequest, Job, ModelNotFound, Refiner
from ..samplers import SamplerChoice
from .schedulers import make_scheduler
from .text_encoding import encode_prompts

NEVER = 1.0
EARLIEST = 0.001  # diffusers takes denoising_end only strictly between 0 and 1


def switch_point(refiner: Refiner | None) -> float | None:
    """Where the base hands over, or None when the refiner is off or never switches in."""
    if refiner is None or not refiner.model or refiner.model.strip().lower() in ("", "none"):
        return None
    at = float(refiner.switch_at if refiner.switch_at is not None else 0.0)
    return None if at >= NEVER else max(at, EARLIEST)


def check_refiner(job: Job, models) -> None:
    """Refuse a refiner model that does not exist (A1111: "Could not find checkpoint with name X")."""
    if switch_point(job.refiner) is None:
        return
    try:
        models.resolve(job.refiner.model)
    except ModelNotFound:
        raise InvalidRequest(f"Could not find checkpoint with name {job.refiner.model}",
                             details={"refiner": job.refiner.model}) from None


def why_not(job: Job, family: str) -> str | None:
    """Why a job's refiner does not run on a model of `family`; None: it runs."""
    if switch_point(job.refiner) is None:
        return None
    if family != "sdxl":
        return f"the refiner works with SDXL models only; this model is {family}"
    if job.hires is not None:
        return "the refiner is not applied together with hires fix"
    if job.init_image is not None:
        return "the refiner is applied to text-to-image only"
    return None


def label(info) -> str:
    """A1111's `name [hash]` of a checkpoint."""
    return f"{info.name} [{info.hash}]" if info.hash else info.name


def refiner_pipeline(refiner_loaded, variant):
    """The refiner's image-to-image pipeline: the loaded one when it is already one (a refiner checkpoint), else
    one sharing its weights."""
    pipe = refiner_loaded.pipe
    return pipe if "Img2Img" in type(pipe).__name__ else variant(refiner_loaded, "img2img")


def refine(models, variant, runs, latents, seeds: list[int], generators, choice: SamplerChoice, job: Job,
           callback):
    """The base's latents at the switch point → the refined images (PIL), for one call's runs."""
    at = switch_point(job.refiner)
    loaded = models.get(job.refiner.model)
    pipe = refiner_pipeline(loaded, variant)
    prompts = [run.prompt for run in runs for _ in range(run.job.batch_size)]
    negatives = [run.negative for run in runs for _ in range(run.job.batch_size)]
    embeds = encode_prompts(pipe, prompts, negatives, clip_skip=job.clip_skip, weighting=job.prompt_weighting)
    pipe.scheduler = make_scheduler(loaded.base_scheduler, choice, seed=seeds)
    images = pipe(
        **embeds,
        image=latents,
        denoising_start=at,
        num_inference_steps=job.steps,
        guidance_scale=job.cfg_scale,
        eta=0.0 if job.eta is None else job.eta,
        generator=generators,
        callback_on_step_end=callback,
        output_type="pil",
    ).images
    for run in runs:
        run.params["Refiner"] = label(loaded.info)
        run.params["Refiner switch at"] = job.refiner.switch_at
    return images

"""The relay's reverse pair for a gateway that speaks A1111: a Job → the /sdapi/v1/txt2img (or img2img) call an
A1111 client would make, and that call's 200 answer → a Result. Forwarding a caller's own A1111 request is
`FORWARD_SPEC`'s data."""

from __future__ import annotations

import json
import time
from typing import Any

from ...images import decode_base64_image, encode_base64
from ...job import GenerationFailed, Job, ModelInfo, Result
from ...samplers import resolve_sampler
from ...upstream import ForwardSpec, UpstreamAnswer, UpstreamPlan, UpstreamRequest
from .auth import GATEWAY_PREFIX, PREFIX

FORWARD_SPEC = ForwardSpec(local_prefixes=((GATEWAY_PREFIX, PREFIX),), error_shapes=("a1111",))
# The Job's optional capabilities an A1111 gateway has request fields for (A1111's own: §2, §4-§8); the others
# (panorama, SAG, ToMe, the safety checker, translation, enhancement) are not A1111's.
CARRIES = frozenset({"vae", "embeddings", "hires", "tiling", "refiner", "subseed_strength", "seed_resize_from"})


def to_upstream(job: Job) -> UpstreamPlan:
    """The /sdapi/v1/txt2img (or img2img, when the job has an init image) body an A1111 client would send.

    The model travels as `override_settings.sd_model_checkpoint` (restored afterwards, as webuiapi does), clip
    skip and emphasis as their options, LoRAs as `<lora:name:weight>` prompt tags; A1111 names the sampler and
    schedule type. A1111 carries every field of a Job that changes the image."""
    choice = resolve_sampler(job.sampler, job.schedule)
    prompt = job.prompt + "".join(f" <lora:{lora.name}:{lora.weight:g}>" for lora in job.loras)
    # A1111 finds embeddings by their names in the prompts: one asked for by name goes into the prompt
    words = set(f"{job.prompt} {job.negative_prompt}".lower().replace(",", " ").split())
    prompt += "".join(f", {name}" for name in job.embeddings if name.lower() not in words)
    overrides: dict[str, Any] = {}
    if job.model:
        overrides["sd_model_checkpoint"] = job.model
    if job.clip_skip and job.clip_skip > 1:
        overrides["CLIP_stop_at_last_layers"] = job.clip_skip
    if not job.prompt_weighting:
        overrides["emphasis"] = "None"
    body: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed if job.seed is not None else -1,
        "sampler_name": choice.name,
        "scheduler": choice.schedule,
        "batch_size": job.batch_size,
        "n_iter": job.n_iter,
        "steps": job.steps,
        "cfg_scale": job.cfg_scale,
        "width": job.width,
        "height": job.height,
        "send_images": True,
        "save_images": False,
    }
    if job.eta is not None:
        body["eta"] = job.eta
    body.update(_feature_fields(job, overrides))
    if overrides:
        body["override_settings"] = overrides
        body["override_settings_restore_afterwards"] = True
    path = f"{PREFIX}/txt2img"
    if job.init_image is not None:
        path = f"{PREFIX}/img2img"
        body["init_images"] = [encode_base64(job.init_image.convert("RGB"), "png")]
        body["denoising_strength"] = job.denoising_strength
        body["resize_mode"] = 0
        if job.mask is not None:
            body["mask"] = encode_base64(job.mask.convert("L"), "png")
            body["mask_blur"] = 0  # the Job's mask is final: blurred (or not) by the dialect that made it
            body["inpainting_fill"] = 1  # "original": the init image under the mask, as the Job means it
            body["inpaint_full_res"] = job.mask_crop_padding is not None
            body["inpaint_full_res_padding"] = job.mask_crop_padding or 0
    return UpstreamPlan(requests=[UpstreamRequest("POST", path, json=body)], notes=list(choice.notes))


def _feature_fields(job: Job, overrides: dict[str, Any]) -> dict[str, Any]:
    """The A1111 request fields of the Job's variation seeds, tiling, VAE, refiner and hires pass."""
    body: dict[str, Any] = {"subseed": job.subseed, "subseed_strength": job.subseed_strength, "tiling": job.tiling}
    if job.seed_resize_from:
        body["seed_resize_from_w"], body["seed_resize_from_h"] = job.seed_resize_from
    if job.vae:
        overrides["sd_vae"] = job.vae
    if job.refiner is not None:
        body["refiner_checkpoint"] = job.refiner.model
        body["refiner_switch_at"] = job.refiner.switch_at
    hires = job.hires
    if hires is not None and job.init_image is None:
        body.update({
            "enable_hr": True, "hr_resize_x": hires.width, "hr_resize_y": hires.height,
            "hr_upscaler": hires.upscaler, "hr_second_pass_steps": hires.steps,
            "denoising_strength": hires.denoising_strength, "hr_checkpoint_name": hires.model,
            "hr_sampler_name": hires.sampler, "hr_scheduler": hires.schedule,
            "hr_prompt": hires.prompt or "", "hr_negative_prompt": hires.negative_prompt or "",
        })
    return body


def from_upstream(job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
    """A 200 answer of /sdapi/v1/txt2img or img2img → Result: the images after any grid, the seeds, sampler and
    model from `info`. Raises GenerationFailed when the answer is not an A1111 response."""
    try:
        body = json.loads(answers[-1].content)
        encoded = body["images"]
        info = body.get("info") or "{}"
        info = json.loads(info) if isinstance(info, str) else info
        if not isinstance(encoded, list) or not isinstance(info, dict):
            raise TypeError("images is not a list or info is not an object")
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise GenerationFailed(f"the gateway's answer is not an A1111 response ({type(e).__name__}: {e})") from None
    first = int(info.get("index_of_first_image") or 0)
    images = [decode_base64_image(data, f"images[{i}]") for i, data in enumerate(encoded[first:], first)]
    seeds = [int(s) for s in info.get("all_seeds") or []][: len(images)]
    if len(seeds) < len(images):
        start = int(info.get("seed", job.seed if job.seed is not None else -1))
        seeds += [start + i for i in range(len(seeds), len(images))]
    subseeds = [int(s) for s in info.get("all_subseeds") or []][: len(images)]
    sampler = str(info.get("sampler_name") or job.sampler)
    name = str(info.get("sd_model_name") or job.model or "a1111")
    model = ModelInfo(name=name, title=name, source="a1111", kind="remote", hash=info.get("sd_model_hash"))
    return Result(
        job=job, images=images, seeds=seeds, model=model, sampler=sampler,
        schedule=str((info.get("extra_generation_params") or {}).get("Schedule type") or job.schedule or "Automatic"),
        scheduler_class="remote", finished_at=time.time(), subseeds=subseeds,
        params={k: v for k, v in (("VAE", info.get("sd_vae_name")), ("VAE hash", info.get("sd_vae_hash"))) if v},
    )

"""A finished txt2img/img2img → A1111's answer: the images (with their infotext, a grid first when saved),
the `parameters` echo of the request and the `info` JSON string (docs/reference/a1111_api.md §2)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ... import outputs
from ...images import encode_base64
from ...infotext import VERSION, checkpoint_short_name, create_infotext
from ...job import Job, Result
from .imaging import make_grid
from .models import ECHO_ORDER, Img2ImgRequest
from .options import RNG_SOURCE
from .plan import FACE_RESTORATION_INFOTEXT, Plan


def infotext(plan: Plan, result: Result, job: Job, seed: int, subseed: int, extra: dict[str, Any]) -> str:
    """One image's infotext: the fixed keys in A1111's order (backends/infotext.py puts them there), then the
    request's extra keys (hires), then what the engine adds (`Result.params`: VAE, TI hashes, the refiner when it
    switched in, ...)."""
    opts = plan.opts
    params = {
        "Steps": job.steps,
        "Sampler": result.sampler,
        "Schedule type": "Automatic",
        "CFG scale": job.cfg_scale,
        "Seed": seed,
        "Face restoration": FACE_RESTORATION_INFOTEXT if plan.restore_faces else None,
        "Size": f"{plan.width}x{plan.height}",
        "Model hash": result.model.hash if opts["add_model_hash_to_info"] else None,
        "Model": checkpoint_short_name(result.model) if opts["add_model_name_to_info"] else None,
        "Variation seed": subseed if job.subseed_strength else None,
        "Variation seed strength": job.subseed_strength or None,
        "Seed resize from": "{}x{}".format(*job.seed_resize_from) if job.seed_resize_from else None,
        "Clip skip": plan.clip_skip if plan.clip_skip > 1 else None,
        "RNG": RNG_SOURCE if RNG_SOURCE != "GPU" else None,
        "Tiling": True if job.tiling and "tiling" not in result.not_applied else None,
        **extra,
        **result.params,
        "Version": VERSION if opts["add_version_to_infotext"] else None,
    }
    return create_infotext(plan.prompt, plan.negative_prompt, params)


def notes_of(plan: Plan, result: Result) -> list[str]:
    """sdgate's own `info.notes`: what ran differently from the request (a demo model, a sampler stand-in, a
    feature not applied and why), never silently."""
    not_applied = [f"{name}: not applied ({why})" for name, why in result.not_applied.items()]
    return list(dict.fromkeys([*plan.notes, *result.notes, *not_applied]))


def echo(req) -> dict[str, Any]:
    """`parameters`: the request as parsed, defaults filled, nothing resolved (seed stays -1)."""
    dumped = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        dumped["init_images"] = None
        dumped["mask"] = None
    order = ECHO_ORDER.get(type(req), list(dumped))
    return {k: dumped[k] for k in order if k in dumped}


def respond(req, plan: Plan, result: Result, outputs_dir: Path) -> dict[str, Any]:
    opts = plan.opts
    job = plan.jobs[0]
    images = list(result.images)
    if plan.overlay_mask is not None:
        images = [
            Image.composite(img.convert("RGB"), orig, plan.overlay_mask) if img.size == orig.size else img
            for img, orig in zip(images, plan.originals)
        ] + images[len(plan.originals) :]
    seeds = list(result.seeds)
    n = len(images)
    subseeds = list(result.subseeds)  # A1111's all_subseeds: subseed + i (a gateway's answer may not say)
    subseeds += [job.subseed + i for i in range(len(subseeds), max(n, len(seeds)))]
    extra = dict(plan.extra)
    if result.schedule and result.schedule != "Automatic":
        extra = {"Schedule type": result.schedule, **extra}
    infotexts = [infotext(plan, result, job, seeds[i], subseeds[i], extra) for i in range(n)]

    fmt = str(opts["samples_format"]).lower()
    quality = int(opts["jpeg_quality"])
    index_of_first_image = 0
    if req.save_images:
        kind = f"{plan.task}-images"
        for img, seed, text in zip(images, seeds, infotexts):
            text = text if opts["enable_pnginfo"] else None
            outputs.save_image(img, outputs_dir, kind, seed, text, fmt, quality=quality, owner=job.owner)
        if n >= 2 and (opts["grid_save"] or opts["return_grid"]):
            grid = make_grid(images, int(opts["n_rows"]))
            if opts["grid_save"]:
                outputs.save_image(grid, outputs_dir, f"{plan.task}-grids", seeds[0], infotexts[0],
                                   str(opts["grid_format"]), quality=quality, prefix="grid-", owner=job.owner)
            if opts["return_grid"]:
                images, infotexts = [grid, *images], [infotexts[0], *infotexts]
                seeds = [seeds[0], *seeds]
                index_of_first_image = 1

    encoded = []
    if req.send_images is not False:
        encoded = [
            encode_base64(img, fmt, text if opts["enable_pnginfo"] else None, quality=quality,
                          lossless_webp=bool(opts["webp_lossless"]))
            for img, text in zip(images, infotexts)
        ]
    count = len(result.seeds)
    first_seed = result.seeds[0] if result.seeds else job.seed
    info = {
        "prompt": plan.prompt,
        "all_prompts": [plan.prompt] * count,
        "negative_prompt": plan.negative_prompt,
        "all_negative_prompts": [plan.negative_prompt] * count,
        "seed": first_seed,
        "all_seeds": list(result.seeds),
        "subseed": plan.subseed,
        "all_subseeds": subseeds[:count],
        "subseed_strength": job.subseed_strength,
        "width": plan.width,
        "height": plan.height,
        "sampler_name": result.sampler,
        "cfg_scale": job.cfg_scale,
        "steps": job.steps,
        "batch_size": job.batch_size,
        "restore_faces": plan.restore_faces,  # asked for; none ran (no model is shipped: see notes)
        "face_restoration_model": None,
        "sd_model_name": checkpoint_short_name(result.model),
        "sd_model_hash": result.model.hash,
        "sd_vae_name": result.params.get("VAE"),
        "sd_vae_hash": result.params.get("VAE hash"),
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": plan.denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": index_of_first_image,
        "infotexts": infotexts,
        "styles": list(req.styles or []),
        "job_timestamp": datetime.datetime.fromtimestamp(plan.started).strftime("%Y%m%d%H%M%S"),
        "clip_skip": plan.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    notes = notes_of(plan, result)
    if notes:  # sdgate's own: what ran differently from the request (a sampler stand-in, the engine used)
        info["notes"] = notes
    return {"images": encoded, "parameters": echo(req), "info": json.dumps(info, default=lambda _: None)}

"""A Result → v1's answer: JSON artifacts `{base64, finishReason, seed}`, or with `Accept: image/png` the one PNG
with Finish-Reason and Seed headers. Every PNG carries its generation parameters (the infotext, readable by
PNG-info tools).

An image the safety checker flagged (`Result.nsfw`) is CONTENT_FILTERED: it is still there, black. v1 has no finish
reason for "not checked", so every answer also says whether a check ran (`SAFETY_HEADER`): `passed`, `filtered`, or
`not-run` (no checker installed, or a gateway that did not say), where SUCCESS means only "generated"."""

from __future__ import annotations

import base64

from PIL import Image

from ...images import encode_image
from ...infotext import checkpoint_short_name, create_infotext
from ...job import Job, Result
from ..base import SAFETY_HEADER, Reply
from .errors import V1Error



def finish_reasons(result: Result) -> list[str]:
    # An interrupted run returns half-denoised images: upstream would call those failures.
    reason = "ERROR" if result.interrupted else "SUCCESS"
    flagged = result.nsfw or []
    return ["CONTENT_FILTERED" if i < len(flagged) and flagged[i] else reason for i in range(len(result.images))]


def safety_check(result: Result) -> str:
    """`SAFETY_HEADER`'s value: whether the safety checker ran on the answer's images, and what it found."""
    if result.nsfw is None:
        return "not-run"
    return "filtered" if any(result.nsfw) else "passed"


def infotext(job: Job, result: Result, seed: int, engine_id: str) -> str:
    params = {
        "Steps": job.steps,
        "Sampler": result.sampler,
        "Schedule type": result.schedule,
        "CFG scale": job.cfg_scale,
        "Seed": seed,
        "Size": f"{job.width}x{job.height}",
        "Model hash": result.model.hash,
        "Model": checkpoint_short_name(result.model),
        "Denoising strength": job.denoising_strength if job.init_image is not None else None,
        "Stability engine": engine_id,
    }
    return create_infotext(job.prompt, job.negative_prompt, params)


def encode_pngs(job: Job, result: Result, engine_id: str, composite: tuple[Image.Image, Image.Image] | None = None
                ) -> list[bytes]:
    """Each image as PNG with its generation parameters in the `parameters` chunk (readable by PNG-info).
    `composite` = (init, mask): pixels outside the mask are the init image's, as v1's masking promises."""
    out = []
    for image, seed in zip(result.images, result.seeds):
        if composite is not None:
            init, mask = composite
            image = Image.composite(image.convert("RGB"), init.convert("RGB"), mask.convert("L"))
        out.append(encode_image(image, "png", infotext(job, result, seed, engine_id)))
    return out


def to_reply(pngs: list[bytes], result: Result, png_mode: bool) -> Reply:
    reasons = finish_reasons(result)
    if png_mode:
        if not pngs:
            raise V1Error(500, "server_error", "the generation was interrupted before any image was made")
        return Reply(pngs[0], media_type="image/png", headers={
            "Finish-Reason": reasons[0], "Seed": str(result.seeds[0]), SAFETY_HEADER: safety_check(result)})
    artifacts = [
        {"base64": base64.b64encode(png).decode("ascii"), "finishReason": reason, "seed": seed}
        for png, reason, seed in zip(pngs, reasons, result.seeds)
    ]
    return Reply({"artifacts": artifacts}, headers={SAFETY_HEADER: safety_check(result)})

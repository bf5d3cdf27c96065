"""A Result → the v2beta answer (docs/reference/hosted_apis.md §B.3): the image bytes with `finish-reason` and
`seed` headers (`accept: image/*`, the default), or `{image, finish_reason, seed}` (`accept: application/json`).

An image the safety checker flagged (`Result.nsfw`) is CONTENT_FILTERED: still there, black. v2beta has no finish
reason for "not checked", so both forms also say whether a check ran (`SAFETY_HEADER`): `passed`, `filtered`, or
`not-run` (no checker installed, or a gateway that did not say), where SUCCESS means only "generated"."""

from __future__ import annotations

import base64
import json

from ...images import encode_image
from ...infotext import VERSION, create_infotext
from ...job import GenerationFailed, Result
from ..base import SAFETY_HEADER, Reply
from .models import V2Request
from .options import OUTPUT_FORMATS
from .plan import EXTRA

FILTERED_NOTE = "content filtered: image {index}"  # a gateway's filtered image, in Result.notes


def finish_reason(result: Result, index: int = 0) -> str:
    flagged = result.nsfw or []
    return "CONTENT_FILTERED" if index < len(flagged) and flagged[index] else "SUCCESS"


def safety_check(result: Result) -> str:
    """`SAFETY_HEADER`'s value: whether the safety checker ran on the answer's image, and what it found."""
    if result.nsfw is None:
        return "not-run"
    return "filtered" if any(result.nsfw[:1]) else "passed"


def wants_json(accept: str | None) -> bool:
    """`application/json` → JSON; `image/*`, `*/*` or nothing → the image bytes (upstream's default)."""
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/json":
            return True
        if media.startswith("image/") or media == "*/*":
            return False
    return False


def infotext_for(result: Result, seed: int) -> str:
    """A1111-style parameters text embedded in the file, so PNG-info tools show how the image was made."""
    job = result.job
    image = result.images[0]
    info = job.extra.get(EXTRA, {})
    params = {
        "Steps": job.steps, "Sampler": result.sampler, "Schedule type": result.schedule, "CFG scale": job.cfg_scale,
        "Seed": seed, "Size": f"{image.width}x{image.height}", "Model hash": result.model.hash,
        "Model": result.model.name,
        "Denoising strength": job.denoising_strength if job.init_image is not None else None,
        "Stability endpoint": info.get("endpoint"), "Style preset": info.get("fields", {}).get("style_preset"),
        "Version": VERSION,
    }
    return create_infotext(job.prompt, job.negative_prompt, params)


def result_to_reply(result: Result, req: V2Request, *, accept_json: bool, request_id: str,
                    jpeg_quality: int = 90) -> Reply:
    """Result → the image bytes with `finish-reason`/`seed` headers, or `{image, finish_reason, seed}`."""
    if not result.images:
        raise GenerationFailed("the generation was interrupted before an image was made")
    image, seed = result.images[0], int(result.seeds[0])
    reason = finish_reason(result, 0)
    data = encode_image(image, req.output_format, infotext_for(result, seed), quality=jpeg_quality)
    mime = OUTPUT_FORMATS[req.output_format]
    if accept_json:
        body = {"image": base64.b64encode(data).decode("ascii"), "finish_reason": reason, "seed": seed}
        return Reply(json.dumps(body).encode(), 200, f"application/json; type={mime}",
                     {"x-request-id": request_id, SAFETY_HEADER: safety_check(result)})
    headers = {"finish-reason": reason, "seed": str(seed), "x-request-id": request_id,
               SAFETY_HEADER: safety_check(result)}
    return Reply(data, 200, mime, headers)

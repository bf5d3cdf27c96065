"""Results → the Images answer (docs/reference/openai_images.md §1): `{created, data: [{b64_json | url,
revised_prompt}], size, quality, output_format, background, usage}`, each image encoded with its infotext inside
(PNG text chunk, or EXIF for jpeg/webp) so PNG-info tools show how it was made."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Optional

from ...images import encode_image
from ...infotext import VERSION, create_infotext
from ...job import GenerationFailed, Result
from ..base import Reply
from .files import ImageFiles
from .models import ImageRequest
from .options import EXTRA

USAGE_ZERO = {"input_tokens": 0, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}, "output_tokens": 0,
              "total_tokens": 0}  # SD has no tokens to bill; the GPT image shape with zeros (§1: safe)


def infotext_for(result: Result, index: int) -> str:
    job = result.job
    image = result.images[index]
    info = job.extra.get(EXTRA, {})
    fields = info.get("fields", {})
    params = {
        "Steps": job.steps, "Sampler": result.sampler, "Schedule type": result.schedule, "CFG scale": job.cfg_scale,
        "Seed": int(result.seeds[index]), "Size": f"{image.width}x{image.height}", "Model hash": result.model.hash,
        "Model": result.model.name,
        "Denoising strength": job.denoising_strength if job.init_image is not None else None,
        "OpenAI model": info.get("model"), "OpenAI operation": info.get("operation"),
        "Quality": fields.get("quality"), "Style": fields.get("style"), "Version": VERSION,
    }
    return create_infotext(job.prompt, job.negative_prompt, params)


def encoded_images(result: Result, output_format: str, compression: Optional[int]) -> list[bytes]:
    """Each image of the result as the file the caller gets (infotext inside)."""
    if not result.images:
        raise GenerationFailed("the generation was interrupted before an image was made")
    quality = 90 if compression is None else max(1, int(compression))
    return [encode_image(image, output_format, infotext_for(result, i), quality=quality)
            for i, image in enumerate(result.images)]


def response_format(req: ImageRequest, default: str) -> str:
    return req.response_format or default


def result_to_reply(result: Result, req: ImageRequest, *, default_format: str, files: ImageFiles, base_url: str,
                    request_id: str) -> Reply:
    """The answer body; `url` answers write their files first (served under /generations/openai/)."""
    info = result.job.extra.get(EXTRA, {})
    fmt = req.output_format or "png"
    data = encoded_images(result, fmt, req.output_compression)
    kind = response_format(req, default_format)
    revised = info.get("revised_prompt", result.job.prompt)
    items: list[dict[str, Any]] = []
    prefix = uuid.uuid4().hex
    for i, encoded in enumerate(data):
        if kind == "url":
            name = files.write(encoded, fmt, i, prefix)
            items.append({"url": files.link(files.base_url(base_url), name), "revised_prompt": revised})
        else:
            items.append({"b64_json": base64.b64encode(encoded).decode("ascii"), "revised_prompt": revised})
    first = result.images[0]
    body = {
        "created": int(time.time()),
        "data": items,
        "size": f"{first.width}x{first.height}",
        "quality": req.quality or "auto",
        "output_format": fmt,
        "background": "opaque",  # no transparency here: a `transparent` request gets opaque pixels, and is told so
        "usage": dict(USAGE_ZERO),
    }
    headers = {"x-request-id": request_id}
    if result.interrupted or result.skipped:
        headers["x-sdgate-notes"] = f"interrupted: {len(result.images)} of {result.job.image_count} images"
    return Reply(body, 200, "application/json", headers)

"""The relay's reverse pair for OpenAI-style gateways: a Job → the Images calls a client of the real service would
make (generations, or edits when the Job has an init image; at most 10 images a call), and their answers (base64, or
URLs downloaded through the gateway) → a Result; and how a caller's own Images request is forwarded
(`FORWARD_SPEC`). Error answers never get here: the gateway client raises them first (the one parser reads
OpenAI's `{error: {...}}` shape)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from ...images import UnreadableImage, decode_base64, open_image, read_infotext
from ...infotext import parse_generation_parameters
from ...job import GenerationFailed, Job, ModelInfo, Result
from ...upstream import ForwardSpec, UpstreamAnswer, UpstreamPlan, UpstreamRequest
from .options import EXTRA, MAX_N, PATH, is_gpt_image

# Our extra mount points: the routes without `/v1` (the SDK never adds it) stand for the /v1 ones upstream.
FORWARD_SPEC = ForwardSpec(local_prefixes=(("/images", "/v1/images"), ("/models", "/v1/models")),
                           request_headers=("content-type", "accept", "openai-organization", "openai-project"),
                           error_shapes=("openai",))

# Job fields OpenAI has no field for (reported when the job set them to something other than the default). The
# seed travels as the `seed` extension field, which sdgate-like servers honour and OpenAI itself ignores.
NOT_CARRIED = ("negative_prompt", "steps", "sampler", "schedule", "cfg_scale", "clip_skip", "loras", "eta",
               "mask_crop_padding")


@dataclass
class Sent:
    """What a plan sent (the plan's `context`), and the URL answers' bytes once downloaded."""

    operation: str
    model: Optional[str]
    downloads: dict[str, bytes] = field(default_factory=dict)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def openai_mask(job: Job) -> bytes:
    """Our mask (white = repaint) → OpenAI's (alpha 0 = repaint) at the init image's size."""
    size = job.init_image.size
    ours = job.mask.convert("L").resize(size)
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.putalpha(ours.point(lambda v: 0 if v >= 128 else 255))
    return _png(mask)


def _translated(job: Job, dropped: list[str], notes: list[str]) -> tuple[str, dict[str, Any]]:
    defaults = Job()
    operation = "edits" if job.init_image is not None else "generations"
    fields: dict[str, Any] = {"prompt": job.prompt, "size": f"{job.width}x{job.height}"}
    for name in NOT_CARRIED:
        if getattr(job, name) != getattr(defaults, name):
            dropped.append(name)
    if job.init_image is not None:
        fidelity = "high" if job.denoising_strength <= 0.5 else "low"
        fields["input_fidelity"] = fidelity
        dropped.append("denoising_strength")
        notes.append(f"denoising strength {job.denoising_strength:g} sent as input_fidelity {fidelity}")
    return operation, fields


def plan_upstream(job: Job) -> UpstreamPlan:
    """The Images calls for `job`. A job this dialect made is sent with its original fields; any other is
    translated (an init image makes an edit, its mask in OpenAI's alpha form). `n` is at most 10 a call: more
    images are more calls, each starting at its own seed."""
    origin = job.extra.get(EXTRA)
    dropped: list[str] = []
    notes: list[str] = []
    if origin:
        operation = origin.get("operation", "generations")
        fields = {k: v for k, v in origin.get("fields", {}).items() if k not in ("seed", "n", "response_format")}
        if operation != "generations" and job.init_image is None:
            operation = "generations"  # the image did not travel with the job
    else:
        operation, fields = _translated(job, dropped, notes)
    model = job.model or fields.get("model")
    if model:
        fields["model"] = model
    else:
        fields.pop("model", None)
    if not is_gpt_image(model):
        fields["response_format"] = "b64_json"  # GPT image models answer base64 anyway (and refuse the field)
    if operation == "variations":
        fields.pop("prompt", None)
    files: list[tuple[str, tuple]] = []
    if operation != "generations":
        files.append(("image", ("image.png", _png(job.init_image.convert("RGB")), "image/png")))
        if operation == "edits" and job.mask is not None:
            files.append(("mask", ("mask.png", openai_mask(job), "image/png")))
    total = max(1, job.image_count)
    requests = []
    for start in range(0, total, MAX_N):
        part = {**fields, "n": min(MAX_N, total - start)}
        if job.seed is not None and job.seed >= 0:
            part["seed"] = int(job.seed) + start
        path = PATH.format(operation=operation)
        if files:
            form = [(k, (None, str(v))) for k, v in part.items() if v is not None]
            requests.append(UpstreamRequest("POST", path, files=form + files))
        else:
            requests.append(UpstreamRequest("POST", path, json=part))
    return UpstreamPlan(requests, dropped=list(dict.fromkeys(dropped)), notes=notes, context=Sent(operation, model))


def answer_items(answer: UpstreamAnswer) -> list[dict[str, Any]]:
    """The `data` items of an Images answer (GenerationFailed when it is not one)."""
    try:
        body = json.loads(answer.content)
        items = body["data"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TypeError("data is not a list of objects")
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise GenerationFailed(f"upstream sent an unreadable Images answer ({type(e).__name__})") from None
    return items


def answer_urls(answers: list[UpstreamAnswer]) -> list[str]:
    return [item["url"] for a in answers for item in answer_items(a) if not item.get("b64_json") and item.get("url")]


def _image(item: dict[str, Any], downloads: dict[str, bytes]) -> Image.Image:
    try:
        data = decode_base64(item["b64_json"]) if item.get("b64_json") else downloads[item["url"]]
        return open_image(data)
    except (KeyError, ValueError, UnreadableImage) as e:
        raise GenerationFailed(f"upstream sent no readable image ({type(e).__name__}: {e})") from None


def _seed_of(image: Image.Image) -> Optional[int]:
    """The seed an sdgate-like upstream wrote into the image's infotext (OpenAI's answers carry none)."""
    text, _ = read_infotext(image)
    try:
        return int(parse_generation_parameters(text)["Seed"]) if text else None
    except (KeyError, TypeError, ValueError):
        return None


def upstream_model(name: Optional[str], gateway: str = "") -> ModelInfo:
    name = name or "openai"
    return ModelInfo(name=name, title=f"{name} (openai images{' @ ' + gateway if gateway else ''})",
                     source=gateway or "openai-images", kind="remote")


def answers_to_result(job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
    sent: Sent = plan.context
    images = [_image(item, sent.downloads) for a in answers for item in answer_items(a)]
    if not images:
        raise GenerationFailed("upstream answered no images")
    seeds = []
    for i, image in enumerate(images):
        seed = _seed_of(image)
        seeds.append(seed if seed is not None else (job.seed + i if job.seed is not None and job.seed >= 0 else -1))
    notes = [f"openai images cannot carry: {', '.join(plan.dropped)}"] if plan.dropped else []
    return Result(job=job, images=[im.convert("RGB") if im.mode not in ("RGB", "L") else im for im in images],
                  seeds=seeds, model=upstream_model(sent.model), sampler=job.sampler,
                  schedule=job.schedule or "Automatic", scheduler_class="remote", notes=notes,
                  finished_at=time.time())

"""The relay's reverse pair for v2beta gateways: a Job → the v2beta calls a client of the real service would make
(one per image: v2beta returns one image per call), and their answers → a Result; and how a caller's own v2beta
request is forwarded (`FORWARD_SPEC`). Error answers never get here: the gateway client raises them first."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from PIL import Image

from ...images import UnreadableImage, decode_base64, open_image
from ...job import GenerationFailed, InvalidRequest, Job, ModelInfo, Result
from ...upstream import STABILITY_HEADERS, ForwardSpec, UpstreamAnswer, UpstreamPlan, UpstreamRequest
from .options import ENDPOINT_SIZES, ENDPOINTS, MAX_SEED, PATH, SD3_LEGACY, SD3_MODELS, nearest_aspect_ratio
from .plan import EXTRA
from .replies import FILTERED_NOTE, SAFETY_HEADER

FORWARD_SPEC = ForwardSpec(local_prefixes=(("/sd/v2beta", "/v2beta"),), request_headers=STABILITY_HEADERS,
                           error_shapes=("stability_v2",))

# Job fields v2beta has no field for (reported when the job set them to something other than the default).
_NOT_CARRIED = ("steps", "sampler", "schedule", "clip_skip", "loras", "eta", "mask", "mask_crop_padding")
NO_FILE = ("none", b"", "application/octet-stream")  # the official sample's multipart trick: never a bare form


@dataclass
class Sent:
    """What a plan sent (the plan's `context`): the endpoint and the sd3 model, if one was named."""

    endpoint: str
    model: Optional[str] = None


@dataclass
class UpstreamImage:
    image: Image.Image
    seed: Optional[int]
    finish_reason: str
    request_id: Optional[str]
    data: bytes  # the encoded file as received
    mime: str
    safety: Optional[str] = None  # an sdgate gateway's SAFETY_HEADER: passed | filtered | not-run


def multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]) -> list[tuple[str, tuple]]:
    """httpx `files=` parts: text fields as (None, value), so the body is always real multipart."""
    return [(k, (None, v)) for k, v in fields.items()] + [(k, v) for k, v in files.items()]


def _endpoint_for(job: Job, endpoint: str | None) -> tuple[str, Optional[str], bool]:
    """(endpoint, sd3 model or None, whether job.model was carried)."""
    name = (job.model or "").strip()
    if endpoint:
        model = SD3_LEGACY.get(name, name) if endpoint == "sd3" and SD3_LEGACY.get(name, name) in SD3_MODELS else None
        return endpoint, model, bool(model) or name in ("", endpoint)
    if name in ("core", "ultra"):
        return name, None, True
    if name == "sd3" or SD3_LEGACY.get(name, name) in SD3_MODELS:
        return "sd3", (SD3_LEGACY.get(name, name) if name != "sd3" else None), True
    # an init image needs an endpoint that takes one
    return ("sd3" if job.init_image is not None else "core"), None, not name


def _translated_fields(job: Job, ep: str, model: Optional[str], carried_model: bool,
                       dropped: list[str], notes: list[str]) -> dict[str, str]:
    """A Job of another style as v2beta text fields; what does not fit goes to `dropped`/`notes`."""
    defaults = Job()
    fields = {"prompt": job.prompt}
    if job.negative_prompt:
        fields["negative_prompt"] = job.negative_prompt
    if job.init_image is None or ep == "core":
        aspect = nearest_aspect_ratio(job.width, job.height)
        fields["aspect_ratio"] = aspect
        if (job.width, job.height) != ENDPOINT_SIZES[ep][aspect]:
            dropped += ["width", "height"]
            notes.append(f"size {job.width}x{job.height} sent as aspect_ratio {aspect} "
                         f"(upstream makes {'x'.join(map(str, ENDPOINT_SIZES[ep][aspect]))})")
    if model:
        fields["model"] = model
    if ep == "sd3":
        if 1 <= job.cfg_scale <= 10:
            fields["cfg_scale"] = f"{job.cfg_scale:g}"
        else:
            dropped.append("cfg_scale")
    elif job.cfg_scale != defaults.cfg_scale:
        dropped.append("cfg_scale")
    for name in _NOT_CARRIED:
        if getattr(job, name) != getattr(defaults, name):
            dropped.append(name)
    if not carried_model:
        dropped.append("model")
    return fields


def plan_upstream(job: Job, *, endpoint: str | None = None, accept: str = "application/json",
                  output_format: str | None = None) -> UpstreamPlan:
    """The v2beta calls a client of the real service would make for `job`.

    A job that came from this dialect (its Job.extra) is sent with its original fields. Otherwise: `job.model`
    picks the endpoint ("core", "ultra", "sd3", an SD3 model name; else `endpoint` or core), the size becomes
    the nearest aspect ratio, `init_image` makes an sd3 image-to-image (or ultra) call with `denoising_strength`
    as `strength`, and each image of the job is one call with seed + i."""
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise InvalidRequest(f"unknown v2beta endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}")
    origin = job.extra.get(EXTRA)
    dropped: list[str] = []
    notes: list[str] = []
    if origin:
        ep = endpoint or origin.get("endpoint", "core")
        fields = {k: str(v) for k, v in origin.get("fields", {}).items() if v is not None and k != "seed"}
        model = fields.get("model")
    else:
        ep, model, carried_model = _endpoint_for(job, endpoint)
        fields = _translated_fields(job, ep, model, carried_model, dropped, notes)
    if output_format:
        fields["output_format"] = output_format
    files: dict[str, tuple[str, bytes, str]] = {}
    if job.init_image is not None:
        if ep == "core":
            dropped += ["init_image", "denoising_strength"]
        else:
            buf = io.BytesIO()
            job.init_image.convert("RGB").save(buf, format="PNG")
            files["image"] = ("image.png", buf.getvalue(), "image/png")
            fields["strength"] = f"{min(1.0, max(0.0, job.denoising_strength)):g}"
            if ep == "sd3":
                fields["mode"] = "image-to-image"
                fields.pop("aspect_ratio", None)
    elif ep == "sd3" and fields.get("mode") == "image-to-image":
        fields["mode"] = "text-to-image"  # the image did not travel with the job
    if not files:
        files["none"] = NO_FILE

    requests = []
    for i in range(max(1, job.image_count)):
        seed = 0 if job.seed is None or job.seed < 0 else int(job.seed) + i
        if seed > MAX_SEED:
            if "seed" not in dropped:
                dropped.append("seed")
            seed = 0
        requests.append(UpstreamRequest("POST", PATH.format(endpoint=ep), files=multipart(
            {**fields, "seed": str(seed)}, files), headers={"accept": accept}))
    return UpstreamPlan(requests, dropped=sorted(set(dropped), key=dropped.index), notes=notes,
                        context=Sent(ep, model))


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def read_answer(answer: UpstreamAnswer) -> UpstreamImage:
    """A v2beta success answer → the image with its seed and finish reason (GenerationFailed when unreadable).
    Image bytes are never decoded as text."""
    ctype = (_header(answer.headers, "content-type") or "").lower()
    request_id = _header(answer.headers, "x-request-id")
    if ctype.startswith("application/json"):
        try:
            body = json.loads(answer.content.decode("utf-8"))
            data = decode_base64(body["image"])
            reason = str(body.get("finish_reason") or "SUCCESS")
            seed = body.get("seed")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise GenerationFailed(f"upstream sent an unreadable JSON answer ({type(e).__name__})") from None
        mime = ctype.partition("type=")[2].split(";")[0].strip() or "image/png"
    else:
        data = answer.content
        reason = _header(answer.headers, "finish-reason") or "SUCCESS"
        seed = _header(answer.headers, "seed")
        mime = ctype.split(";")[0].strip() or "image/png"
    try:
        image = open_image(data)
    except UnreadableImage as e:
        raise GenerationFailed(f"upstream sent no readable image ({e})") from None
    return UpstreamImage(image=image, seed=_int_or_none(seed), finish_reason=reason, request_id=request_id,
                         data=data, mime=mime, safety=_header(answer.headers, SAFETY_HEADER.lower()))


def upstream_model(name: str, gateway: str = "") -> ModelInfo:
    """What a v2beta gateway's answer says was used: the endpoint or sd3 model name."""
    return ModelInfo(name=name, title=f"{name} (stability v2beta{' @ ' + gateway if gateway else ''})",
                     source=gateway or "stability-v2beta", kind="remote")


def images_to_result(job: Job, plan: UpstreamPlan, images: list[UpstreamImage]) -> Result:
    """The read answers of a plan → a Result (seeds as upstream reported them; the plan's dropped fields and
    any CONTENT_FILTERED images in the notes). CONTENT_FILTERED images are the Result's `nsfw` verdicts; SUCCESS
    alone is no verdict (a gateway need not filter): `nsfw` is set only when some image was filtered or every
    answer says a check ran (an sdgate gateway's SAFETY_HEADER)."""
    sent: Sent = plan.context
    notes = [f"stability v2beta cannot carry: {', '.join(plan.dropped)}"] if plan.dropped else []
    seeds = []
    for i, item in enumerate(images):
        seeds.append(item.seed if item.seed is not None else (job.seed + i if job.seed >= 0 else -1))
        if item.finish_reason != "SUCCESS":
            notes.append(FILTERED_NOTE.format(index=i) if item.finish_reason == "CONTENT_FILTERED"
                         else f"image {i}: finish reason {item.finish_reason}")
    filtered = [item.finish_reason == "CONTENT_FILTERED" for item in images]
    checked = any(filtered) or (images and all(item.safety in ("passed", "filtered") for item in images))
    return Result(
        job=job, images=[item.image for item in images], seeds=seeds, model=upstream_model(sent.model or sent.endpoint),
        sampler=job.sampler, schedule=job.schedule or "Automatic", scheduler_class="remote", notes=notes,
        finished_at=time.time(), nsfw=filtered if checked else None,
    )


def answers_to_result(job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
    return images_to_result(job, plan, [read_answer(answer) for answer in answers])

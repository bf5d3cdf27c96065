"""ModelsLab on the relay's side (docs/reference/hosted_apis.md §C, §D.4): the reverse pair that sends a Job to a
ModelsLab gateway (Job → text2img body; `processing` polled through fetch until `success`; output URLs
downloaded, base64 outputs decoded → Result), and the end of a caller's own ModelsLab request forwarded to a
gateway that speaks it (polled to `success`, outputs served from our `/generations/`).

The gateway client (backends/remote) has already turned every error answer, the legacy HTTP 200 with
`status: error|failed` included, into an UpstreamError before anything here reads it."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from ...images import UnreadableImage, decode_base64, open_image
from ...job import FEATURE_FIELDS, GenerationFailed, InvalidRequest, Job, ModelInfo, Result
from ...samplers import resolve_sampler
from ...upstream import ForwardRequest, Forwarded, ForwardSpec, Gateway, UpstreamAnswer, UpstreamPlan, UpstreamRequest
from ..base import Dialect
from .files import GenerationFiles, open_output
from .models import is_yes, yes_no
from .options import DEFAULT_FAMILY, FAMILY

URL_SCHEMES = ("http://", "https://")
# what a forwarded `success` no longer needs: the polling hints of the first answer
STALE_FIELDS = ("fetch_result", "future_links", "eta", "messege", "message", "tip_1")


@dataclass
class Pending:
    """A `processing` answer: poll `fetch_request(pending)` after about `eta` seconds."""

    id: int | str
    eta: float
    fetch_result: str | None
    future_links: list[str]
    meta: dict[str, Any]


@dataclass
class Finished:
    """A `success` answer. `output` holds URLs (download them: `decode_output` returns None for those) or base64."""

    id: int | str | None
    output: list[str]
    meta: dict[str, Any]
    generation_time: float | None = None
    nsfw: bool = False


def is_url(entry: str) -> bool:
    return entry.startswith(URL_SCHEMES)


# ------------------------------------------------------------------------------------------ Job → gateway


def upscale_value(job: Job) -> str:
    """`upscale` for a Job's second pass: "yes" at 2×, "3"/"4" at those; "no" for none (or another size)."""
    if job.hires is None:
        return "no"
    factor = job.hires.width / job.width
    return "yes" if factor == 2 else str(int(factor)) if factor in (3, 4) else "no"


def job_to_request(
    job: Job,
    *,
    family: str = DEFAULT_FAMILY,
    model_id: str | None = None,
    base64: bool = False,
    webhook: str | None = None,
    track_id: Any = None,
    instant_response: bool = False,
) -> UpstreamPlan:
    """The body a ModelsLab client would send for `job` (ints and floats as the official SDK sends them, flags as
    "yes"/"no"), with the Job fields it cannot carry (they would change the image: the relay reports them) and
    the approximations made. The switches (enhance_prompt, tomesd, upscale...) are sent as the Job asks, "no" when
    it does not, so the gateway's image matches the Job. `key` is None: the gateway client puts
    the gateway's key there. Raises InvalidRequest when the job cannot be expressed (more than 4 images)."""
    fam = FAMILY[family]
    dropped: list[str] = []
    notes: list[str] = []
    if job.image_count > 4:
        raise InvalidRequest(f"ModelsLab returns at most 4 images per request; this job has {job.image_count}")
    choice = resolve_sampler(job.sampler, job.schedule)
    if choice.scheduler_class != job.sampler:
        notes.append(f"sampler {job.sampler!r} sent as scheduler {choice.scheduler_class}")
    karras = bool(choice.config.get("use_karras_sigmas"))
    # ModelsLab has one schedule switch, use_karras_sigmas: any other schedule type cannot be asked for
    asked = (job.schedule or "automatic").strip().lower()
    if asked not in ("automatic", "karras") or choice.schedule not in ("Automatic", "Karras"):
        dropped.append("schedule")
    body: dict[str, Any] = {
        "key": None,
        "model_id": model_id if model_id is not None else job.model,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt or None,
        "width": job.width,
        "height": job.height,
        "samples": job.image_count,
        "num_inference_steps": job.steps,
        "guidance_scale": job.cfg_scale,
        "seed": job.seed if job.seed is not None and job.seed >= 0 else None,
        "clip_skip": job.clip_skip,
        "scheduler": choice.scheduler_class,
        "use_karras_sigmas": yes_no(karras),
        "safety_checker": yes_no(job.safety_check),
        "enhance_prompt": yes_no(job.enhance_prompt),
        "multi_lingual": yes_no(job.translate is not None),
        "panorama": yes_no(job.panorama),
        "self_attention": yes_no(job.sag_scale is not None),
        "upscale": upscale_value(job),
        "tomesd": yes_no(job.tome_ratio is not None),
        "vae": job.vae,
        "embeddings_model": ",".join(job.embeddings) or None,
        "base64": yes_no(base64),
        "lora_model": ",".join(lora.name for lora in job.loras) or None,
        "lora_strength": ",".join(f"{lora.weight:g}" for lora in job.loras) or None,
        "webhook": webhook,
        "track_id": track_id,
    }
    if instant_response:
        body["instant_response"] = True
    if not fam.model_required and model_id is None:
        body.pop("model_id")
    for name, lost in (("init_image", job.init_image is not None), ("mask", job.mask is not None),
                       ("eta", job.eta is not None), ("prompt_weighting", not job.prompt_weighting),
                       ("preview_every", bool(job.preview_every)),
                       ("mask_crop_padding", job.mask_crop_padding is not None),
                       ("hires", job.hires is not None and upscale_value(job) == "no")):
        if lost:
            dropped.append(name)
    request = UpstreamRequest("POST", fam.generate[0], json=body, key_in_body=True)
    return UpstreamPlan([request], dropped=dropped, notes=notes)


def fetch_request(pending: Pending | int | str, *, family: str = DEFAULT_FAMILY,
                  base_url: str | None = None) -> UpstreamRequest:
    """The fetch call for a pending answer (or a bare id). When `fetch_result` lies under `base_url` (the gateway's
    base URL plus prefix) its path is used; otherwise `{fetch path}/{id}` of the family is built: our key is never
    posted to a host the gateway was not configured with."""
    request_id = pending.id if isinstance(pending, Pending) else pending
    fetch_result = pending.fetch_result if isinstance(pending, Pending) else None
    path = f"{FAMILY[family].fetch[0]}/{request_id}"
    if fetch_result and base_url and fetch_result.startswith(base_url.rstrip("/") + "/"):
        path = fetch_result[len(base_url.rstrip("/")):]
    return UpstreamRequest("POST", path, json={"key": None}, key_in_body=True)


# ------------------------------------------------------------------------------------------ gateway → Result


def parse_response(status_code: int, body: Any) -> Finished | Pending:
    """A ModelsLab answer that the gateway client let through (text2img or fetch) → Finished or Pending. `body`
    is the parsed JSON or its bytes; anything else, or a status this style does not have, is GenerationFailed
    (the gateway's answer is unreadable)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            body = None
    if not isinstance(body, dict):
        raise GenerationFailed("the ModelsLab gateway answered something that is not a JSON object",
                               details={"upstream_status": status_code})
    status = str(body.get("status", "")).lower()
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    if status == "success" and status_code < 400:
        output = body.get("output") or []
        if isinstance(output, str):
            output = [output]
        return Finished(
            id=body.get("id"),
            output=[str(o) for o in output],
            meta=meta,
            generation_time=body.get("generationTime"),
            nsfw=bool(body.get("nsfw_content_detected", False)),
        )
    if status == "processing" and status_code < 400:
        try:
            eta = float(body.get("eta") or 0)
        except (TypeError, ValueError):
            eta = 0.0
        links = body.get("future_links") or []
        return Pending(
            id=body.get("id"),
            eta=eta,
            fetch_result=body.get("fetch_result") or None,
            future_links=[str(u) for u in links] if isinstance(links, list) else [],
            meta=meta,
        )
    raise GenerationFailed(f"unexpected ModelsLab status {body.get('status')!r}",
                           details={"upstream_status": status_code})


def decode_output(entry: str) -> Image.Image | None:
    """An `output` entry as an image: base64 (raw or a data: URL) is decoded; an http(s) URL gives None (to be
    downloaded). Raises GenerationFailed for anything else."""
    text = entry.strip()
    if is_url(text):
        return None
    try:
        return open_image(decode_base64(re.sub(r"^data:[^,]*,", "", text)))
    except (ValueError, UnreadableImage) as e:
        raise GenerationFailed(f"a ModelsLab output entry is neither a URL nor an image ({e})") from None


def result_from_response(job: Job, finished: Finished, images: list[Image.Image],
                         model: ModelInfo | None = None) -> Result:
    """A Result from a `success` answer and its images (decoded or downloaded, in `output` order)."""
    meta = finished.meta
    seeds = meta.get("seeds")
    if not (isinstance(seeds, list) and len(seeds) >= len(images)):
        try:
            first = int(meta.get("seed"))
        except (TypeError, ValueError):
            first = job.seed
        seeds = [first + i for i in range(len(images))]
    scheduler = str(meta.get("scheduler") or job.sampler)
    karras = is_yes(meta.get("use_karras_sigmas", "no"))
    notes = [str(n) for n in meta.get("notes", []) if isinstance(n, str)]
    notes += [f"{name} not applied by the gateway: {why}" for name, why in (meta.get("not_applied") or {}).items()]
    if model is None:
        name = str(meta.get("model_id") or meta.get("model") or job.model or "modelslab")
        model = ModelInfo(name=name, title=name, source="modelslab", kind="remote")
    prompt = meta.get("prompt")
    return Result(
        job=job,
        images=images,
        nsfw=[finished.nsfw] * len(images) if job.safety_check else None,
        prompt=prompt if isinstance(prompt, str) and prompt != job.prompt else None,
        seeds=[int(s) for s in seeds[: len(images)]],
        model=model,
        sampler=scheduler,
        schedule="Karras" if karras else "Automatic",
        scheduler_class=scheduler,
        notes=notes,
        timings={"total": float(finished.generation_time or 0.0)},
        finished_at=time.time(),
    )


async def poll(gateway: Gateway, content: bytes) -> Finished:
    """`processing` → poll the fetch route until `success` (returned) or the deadline
    (docs/reference/hosted_apis.md §D.4 items 6, 7): the first poll waits max(eta, poll_interval), later ones
    poll_interval; `fetch_result` is followed only when it lies under the gateway's own base URL (our key goes
    nowhere else)."""
    state = await Dialect.read_upstream(gateway, parse_response, 200, content)
    wait = max(state.eta if isinstance(state, Pending) else 0.0, gateway.poll_interval)
    polls = 0
    while isinstance(state, Pending):
        if wait >= gateway.seconds_left():
            raise gateway.timed_out(f"ModelsLab request {state.id} still processing after {polls} polls; the "
                                    f"deadline of {gateway.deadline_s:g} s would pass")
        await gateway.sleep(wait)
        answer = await gateway.send(fetch_request(state, base_url=gateway.base_url))
        state = await Dialect.read_upstream(gateway, parse_response, answer.status, answer.content)
        wait = gateway.poll_interval
        polls += 1
    return state


# ------------------------------------------------------------------------------------------ the dialect's side


class ModelslabUpstream(Dialect):
    """The relay's half of the ModelsLab dialect (api.py adds the routes' half)."""

    forward_spec: ClassVar[ForwardSpec] = ForwardSpec(key_in_body=True, error_shapes=("modelslab",))
    carries: ClassVar[frozenset[str]] = frozenset(FEATURE_FIELDS)  # every switch has a ModelsLab field
    files: GenerationFiles  # where forwarded outputs are written and served from (set by the dialect)

    def to_upstream(self, job: Job) -> UpstreamPlan:
        return job_to_request(job, model_id=job.model or "")

    def from_upstream(self, job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
        """`plan.context` is the `success` answer (Finished); `answers` the downloads of its URL outputs, in order."""
        finished: Finished = plan.context
        downloads = iter(answers)
        images = []
        for i, entry in enumerate(finished.output):
            image = decode_output(entry)
            if image is None:
                image = open_output(next(downloads).content, f"output {i}")
            images.append(image)
        return result_from_response(job, finished, images)

    async def call_upstream(self, job: Job, gateway: Gateway) -> Result:
        """Send the text2img body, poll it to `success`, download its URL outputs, read it all back."""
        plan = self.to_upstream(job)
        answer = await gateway.send(plan.requests[0])
        plan.context = finished = await poll(gateway, answer.content)
        downloads = [UpstreamAnswer(200, {}, await gateway.download(entry))
                     for entry in finished.output if is_url(entry)]
        result = await self.read_upstream(gateway, self.from_upstream, job, plan, downloads)
        result.dropped = list(plan.dropped)
        result.notes += plan.notes
        return result

    async def finish_forward(self, answer: UpstreamAnswer, gateway: Gateway,
                             request: ForwardRequest) -> Forwarded | None:
        """A forwarded ModelsLab answer: `processing` polled to `success`, and output URLs downloaded and served by
        us (a URL on the gateway's CDN may be unreachable for the caller, or expire). Answers that are neither
        (system_details, model lists...) go back as they are (None)."""
        try:
            first = json.loads(answer.content)
        except (ValueError, UnicodeDecodeError):
            first = None
        if not isinstance(first, dict):
            raise gateway.unreadable("answered something that is not a JSON object")
        if first.get("status") != "processing" and "output" not in first:
            return None
        finished = await poll(gateway, answer.content)
        reply = dict(first) if first.get("status") == "success" else {"status": "success", "id": finished.id}
        reply.update(output=list(finished.output), meta=finished.meta or reply.get("meta", {}))
        if finished.generation_time is not None:
            reply["generationTime"] = finished.generation_time
        for stale in STALE_FIELDS:
            reply.pop(stale, None)
        base, prefix = self.files.base_url(request.base_url), str(uuid.uuid4())
        urls = []
        for i, entry in enumerate(finished.output):
            if is_url(entry):
                data = await gateway.download(entry)
                await asyncio.to_thread(self.files.write, prefix, i, data)
                entry = self.files.link(base, prefix, i)
            urls.append(entry)
        reply["output"] = urls
        reply["proxy_links"] = [u for u in urls if is_url(u)]
        return Forwarded(200, {"content-type": "application/json"}, gateway.redact(json.dumps(reply).encode()))

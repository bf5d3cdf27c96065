"""The reverse pair the relay uses to speak v1 to a gateway: a Job → the v1 request a client of the real service
would make (`to_upstream`), and the v1 answer → a Result (`from_upstream`). Error answers never get here: the
gateway client raises for them first (backends/remote/errors.py reads every gateway error shape)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from PIL import Image

from ...images import UnreadableImage, decode_base64, open_image
from ...job import GenerationFailed, Job, ModelInfo, Result, SdgateError
from ...sampler_table import STABILITY_SAMPLERS
from ...samplers import resolve_sampler
from ...upstream import STABILITY_HEADERS, ForwardSpec, UpstreamAnswer, UpstreamPlan, UpstreamRequest
from .engines import DEFAULT_SD_ENGINE, DEFAULT_SDXL_ENGINE, SDXL_V1_SIZES, check_size
from .options import CFG_RANGE, MAX_SAMPLES, MAX_SEED, STEPS_STRICT
from .plan import wants_png
from .replies import SAFETY_HEADER

# A caller's own v1 request, forwarded to a gateway that speaks v1: our /sd/v1 mount is upstream's /v1.
FORWARD_SPEC = ForwardSpec(local_prefixes=(("/sd/v1", "/v1"),), request_headers=STABILITY_HEADERS,
                           error_shapes=("stability_v1",))


@dataclass(frozen=True)
class Sent:
    """`UpstreamPlan.context`: the engine chosen and the request sent (its sampler names the Result's)."""

    engine_id: str
    request: UpstreamRequest

    @property
    def sampler(self) -> str | None:
        """The v1 sampler sent (None: upstream picks)."""
        fields = self.request.json if self.request.json is not None else (self.request.data or {})
        return fields.get("sampler")


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _v1_sampler(job: Job) -> str | None:
    if job.sampler in STABILITY_SAMPLERS:
        return job.sampler
    try:
        used = resolve_sampler(job.sampler).name
    except SdgateError:
        return None
    by_row = {row: enum for enum, row in STABILITY_SAMPLERS.items()}
    return by_row.get(used)


def pick_engine(job: Job) -> str:
    """The Job's model when it names one (the gateway's model name), else the engine its size suits."""
    if job.model:
        return job.model
    return DEFAULT_SDXL_ENGINE if (job.width, job.height) in SDXL_V1_SIZES else DEFAULT_SD_ENGINE


def to_upstream(job: Job, *, accept: str = "application/json") -> UpstreamPlan:
    """The v1 request for `job` (the relay's Job → v1). Fields v1 cannot carry are listed in `dropped` with a
    note each; sizes are checked against the engine's rule here (an InvalidRequest, before any network)."""
    engine = pick_engine(job)
    dropped: list[str] = []
    notes: list[str] = []

    def drop(name: str, why: str) -> None:
        dropped.append(name)
        notes.append(f"{name}: {why}")

    text_prompts: list[dict[str, Any]] = [{"text": job.prompt, "weight": 1.0}]
    if job.negative_prompt.strip():
        text_prompts.append({"text": job.negative_prompt, "weight": -1.0})
    if not job.prompt_weighting and re.search(r"[()\[\]]", job.prompt + job.negative_prompt):
        drop("prompt_weighting", "v1 has no switch for emphasis; brackets are sent as they are")

    samples = job.image_count
    if samples > MAX_SAMPLES:
        drop("batch_size", f"v1 makes at most {MAX_SAMPLES} samples per request; asked {samples}, "
                           f"sent {MAX_SAMPLES}")
        samples = MAX_SAMPLES
    steps = min(STEPS_STRICT[1], max(STEPS_STRICT[0], job.steps))
    if steps != job.steps:
        drop("steps", f"v1 takes {STEPS_STRICT[0]}..{STEPS_STRICT[1]} steps; sent {steps} for {job.steps}")
    cfg = min(CFG_RANGE[1], max(CFG_RANGE[0], float(job.cfg_scale)))
    if cfg != job.cfg_scale:
        drop("cfg_scale", f"v1 takes cfg_scale {CFG_RANGE[0]:g}..{CFG_RANGE[1]:g}; sent {cfg:g}")
    if 1 <= job.seed <= MAX_SEED:
        seed = job.seed
    else:
        seed = 0
        if job.seed >= 0:  # -1 is "random" in both styles; 0 and > uint32 cannot be asked of v1
            drop("seed", f"v1 seeds are 1..{MAX_SEED} (0 means random); {job.seed} sent as random")
    sampler = _v1_sampler(job)
    if sampler is None:
        drop("sampler", f"{job.sampler!r} has no v1 equivalent; upstream picks")
    if job.schedule and job.schedule.lower() not in ("automatic", ""):
        drop("schedule", f"v1 has no schedule type; {job.schedule!r} not sent")
    if job.clip_skip not in (None, 1):
        drop("clip_skip", "v1 has no clip skip")
    if job.loras:
        drop("loras", "v1 has no LoRAs")
    if "<lora:" in job.prompt:
        drop("loras", "v1 has no LoRAs; <lora:...> tags are sent as text")
    if job.eta not in (None, 0, 0.0):
        drop("eta", "v1 has no eta")
    if job.mask_crop_padding is not None:
        drop("mask_crop_padding", "v1 masking has no 'only masked' mode")

    png = wants_png(accept) and samples == 1
    base = f"/v1/generation/{quote(engine, safe='')}"  # a local model title may hold spaces or brackets
    headers = {"Accept": "image/png" if png else "application/json"}
    params: dict[str, Any] = {"cfg_scale": cfg, "samples": samples, "seed": seed, "steps": steps}
    if sampler:
        params["sampler"] = sampler
    check_size(engine, job.width, job.height)

    if job.init_image is None:
        headers["Content-Type"] = "application/json"
        body = {"text_prompts": text_prompts, "height": job.height, "width": job.width, **params}
        request = UpstreamRequest("POST", f"{base}/text-to-image", json=body, headers=headers)
    else:
        # image-to-image: v1 makes the init image's size, so the init goes up at the Job's size
        init = job.init_image.convert("RGB").resize((job.width, job.height), Image.LANCZOS)
        data = {f"text_prompts[{i}][{k}]": str(v) for i, p in enumerate(text_prompts) for k, v in p.items()}
        data.update({k: str(v) for k, v in params.items()})
        files = {"init_image": ("init_image.png", _png_bytes(init), "image/png")}
        if job.mask is None:
            path = f"{base}/image-to-image"
            data["init_image_mode"] = "IMAGE_STRENGTH"
            data["image_strength"] = f"{1.0 - float(job.denoising_strength):.6g}"
        else:
            path = f"{base}/image-to-image/masking"
            data["mask_source"] = "MASK_IMAGE_WHITE"
            mask = job.mask.convert("L").resize((job.width, job.height), Image.LANCZOS)
            files["mask_image"] = ("mask_image.png", _png_bytes(mask), "image/png")
            if job.denoising_strength < 1.0:
                drop("denoising_strength", "v1 masking always repaints the masked area completely")
        request = UpstreamRequest("POST", path, data=data, files=files, headers=headers)
    return UpstreamPlan([request], dropped=list(dict.fromkeys(dropped)), notes=notes,
                        context=Sent(engine, request))


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for k, v in (headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def _artifact_list(data: Any) -> list[dict]:
    """`{"artifacts": [...]}`, tolerating the nested `[[...]]` of the resellers' example (docs/reference/seeds/
    000_9daa22ba4189ec4a.txt, 001_002dc88313dc43f0.txt) and the spec's bare array."""
    items = data.get("artifacts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("no artifacts")
    flat: list = []
    for item in items:
        flat.extend(item if isinstance(item, list) else [item])
    if not all(isinstance(a, dict) for a in flat):
        raise ValueError("artifacts are not objects")
    return flat


def _unreadable(message: str) -> GenerationFailed:
    exc = GenerationFailed(message)
    exc.status = 502  # the gateway's fault
    return exc


def from_upstream(job: Job, plan: UpstreamPlan, answers: list[UpstreamAnswer]) -> Result:
    """A v1 answer (JSON artifacts, or PNG + Finish-Reason/Seed headers) → a Result. ERROR artifacts are dropped
    with a note (all ERROR: GenerationFailed); CONTENT_FILTERED ones are kept with a note and are the Result's
    `nsfw` verdicts. SUCCESS alone is no verdict (a gateway need not filter at all): `nsfw` is set only when some
    image was filtered, or when the gateway says its check ran (an sdgate gateway's SAFETY_HEADER). Anything that is
    not a v1 answer is a 502."""
    (answer,) = answers
    sent: Sent | None = plan.context
    engine = sent.engine_id if sent else pick_engine(job)
    content_type = (_header(answer.headers, "content-type") or "").split(";")[0].strip().lower()
    entries: list[tuple[bytes, str, int | None]] = []  # (png bytes, finish reason, seed)
    try:
        if content_type.startswith("image/") or answer.content[:8] == b"\x89PNG\r\n\x1a\n":
            seed = _header(answer.headers, "seed")
            entries.append((answer.content, _header(answer.headers, "finish-reason") or "SUCCESS",
                            int(seed) if seed else None))
        else:
            for a in _artifact_list(json.loads(answer.content)):
                entries.append((decode_base64(a.get("base64") or ""), str(a.get("finishReason") or "SUCCESS"),
                                a.get("seed")))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise _unreadable(f"upstream answered {answer.status} with a body that is not a Stability v1 response "
                          f"({e})") from None

    notes: list[str] = []
    images, seeds, filtered = [], [], []
    for i, (raw, reason, seed) in enumerate(entries):
        if reason == "ERROR":
            notes.append(f"upstream image {i} finished with ERROR; left out")
            continue
        if reason == "CONTENT_FILTERED":
            notes.append(f"upstream image {i} was CONTENT_FILTERED (blurred or blacked out)")
        try:
            image = open_image(raw)
        except UnreadableImage as e:
            raise _unreadable(f"upstream image {i} cannot be decoded ({e})") from None
        images.append(image)
        filtered.append(reason == "CONTENT_FILTERED")
        fallback = job.seed + i if job.seed >= 0 else -1
        seeds.append(int(seed) if seed is not None else fallback)
    if not images:
        raise _unreadable("upstream returned no usable image" + (" (every image finished with ERROR)"
                                                                  if entries else ""))
    sampler = sent.sampler if sent else None
    checked = any(filtered) or _header(answer.headers, SAFETY_HEADER) in ("passed", "filtered")
    return Result(
        job=job,
        images=images,
        seeds=seeds,
        model=ModelInfo(name=engine, title=engine, source=f"stability-v1:{engine}", kind="remote"),
        sampler=STABILITY_SAMPLERS.get(sampler, sampler) if sampler else "upstream default",
        schedule="Automatic",
        scheduler_class="",
        notes=notes,
        nsfw=filtered if checked else None,
    )

"""The contract between the API dialects and the backends (docs/architecture.md).

Every dialect (A1111, Stability v1/v2beta, ModelsLab, OpenAI Images) translates its request into a `Job` and a `Result`
back into its response. The engine, the queue and the relay know only these types and the errors below.
This module imports nothing of the project: everything else may import it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image


# --------------------------------------------------------------------------------------------- errors


class SdgateError(Exception):
    """A failure with a message fit for the user; dialects render it in their own error shape."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(SdgateError):
    status = 400
    code = "invalid_request"


class PayloadTooLarge(SdgateError):
    """A request body past `[limits] max_body_bytes` (webui/body_limit.py)."""

    status = 413
    code = "payload_too_large"


class UnknownSampler(InvalidRequest):
    code = "unknown_sampler"

    def __init__(self, name: str, valid: list[str]):
        super().__init__(
            f"unknown sampler {name!r}; valid names: {', '.join(valid)}",
            details={"sampler": name, "valid": valid},
        )


class ModelNotFound(SdgateError):
    status = 404
    code = "model_not_found"


class LoraNotFound(InvalidRequest):
    status = 404
    code = "lora_not_found"


class ModelUnavailable(SdgateError):
    """The model is known but cannot be loaded here (e.g. a hub repo id while offline)."""

    status = 503
    code = "model_unavailable"


class QueueFull(SdgateError):
    """The queue (or the caller's share of it, or the caller's rate limit) is full: each style answers with its
    busy shape and `retry_after` seconds."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 5, details: dict[str, Any] | None = None):
        super().__init__(message, details={"retry_after": int(retry_after), **(details or {})})
        self.retry_after = int(retry_after)


class JobCancelled(SdgateError):
    """The job was cancelled (DELETE /jobs/{id}) before it started."""

    status = 409
    code = "cancelled"


class GenerationFailed(SdgateError):
    status = 500
    code = "generation_failed"


class WorkerLost(SdgateError):
    """The engine replica running the job stopped (its process or machine died: backends/cluster/); the server
    goes on and a new replica takes its place, so trying again shortly works."""

    status = 503
    code = "worker_lost"


# ------------------------------------------------------------------------------------ styles and routes


class Style(str, enum.Enum):
    """The API styles: the one vocabulary for keys, config, the relay, the UI and logs. A str, so a config
    value or a JSON field compares equal to it ("a1111" == Style.A1111)."""

    A1111 = "a1111"
    STABILITY_V1 = "stability_v1"
    STABILITY_V2 = "stability_v2"
    MODELSLAB = "modelslab"
    OPENAI = "openai"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Route:
    """Where one request runs, decided once when it arrives (`Service.route_for`, or the UI's Backend choice)
    and carried as a value from there on: never read from hidden state.

    gateway None: this server's engine. A gateway name: `forward` says the gateway speaks the caller's style and
    gets the caller's request as it is; otherwise the request's Jobs are translated to a style it speaks."""

    gateway: str | None = None
    forward: bool = False

    @property
    def local(self) -> bool:
        return self.gateway is None


LOCAL = Route()


# ------------------------------------------------------------------------------------------ the job


@dataclass
class Lora:
    name: str
    weight: float = 1.0


@dataclass
class Hires:
    """A second pass at a larger size on the first pass's result (A1111's hires fix, ModelsLab's `upscale`).

    Latent upscalers ("Latent", "Latent (nearest)", "Latent (bicubic antialiased)", ...) resize the latents before
    the second pass; pixel ones ("Lanczos", "Nearest") resize the decoded image and encode it again."""

    width: int
    height: int
    upscaler: str = "Latent"
    steps: int = 0  # 0: as many as the first pass
    denoising_strength: float = 0.7
    # None: as the first pass (A1111's hr_checkpoint_name, hr_sampler_name, hr_scheduler, hr_prompt, ...)
    model: str | None = None
    sampler: str | None = None
    schedule: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    # resize to this (w, h) first, covering width × height, then centre-crop to width × height (A1111's
    # hr_resize_x and hr_resize_y both set); None: resize straight to width × height
    cover: tuple[int, int] | None = None


@dataclass
class Refiner:
    """SDXL's refiner: the base model denoises up to `switch_at` (diffusers' denoising_end), then `model`
    finishes from those latents (denoising_start), as A1111's refiner_checkpoint / refiner_switch_at."""

    model: str
    switch_at: float = 0.8


@dataclass
class Job:
    """One text-to-image (or image-to-image) request, in no dialect's terms.

    `seed` -1 draws a random seed; image i of the whole job (batch_size × n_iter images) uses seed + i,
    as A1111 does. `sampler` is any name in the sampler table (A1111 names, Stability v1 enum, diffusers
    class names); `schedule` is an A1111 schedule type ("Automatic", "Karras", ...).
    """

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "Euler"
    schedule: str | None = None
    seed: int = -1
    batch_size: int = 1
    n_iter: int = 1
    model: str | None = None  # None: the server's current model
    clip_skip: int = 1
    loras: list[Lora] = field(default_factory=list)
    eta: float | None = None
    # A1111 emphasis syntax "(x:1.2)", "[x]", BREAK; off treats brackets as plain text.
    prompt_weighting: bool = True
    # image-to-image: an init image (and optional mask, white = repaint) with the denoising strength.
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    denoising_strength: float = 0.75
    # inpaint "only masked": work on the mask's bounding box plus this padding, then paste back
    mask_crop_padding: int | None = None
    # send a preview of the running latents every N steps (0: never)
    preview_every: int = 0
    # A1111 variation seeds: image i's starting noise is slerp(subseed_strength, noise(seed_i), noise(subseed + i))
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, int] | None = None  # (w, h): the seed's noise drawn at this size, pasted centred
    tiling: bool = False  # seamless in both directions (circular padding in the UNet and VAE)
    refiner: Refiner | None = None
    # optional capabilities: each is one module of backends/local/features/ (docs/architecture.md "Features")
    vae: str | None = None  # a VAE in models/VAE/, a diffusers folder or a hub id; None: the model's own
    embeddings: list[str] = field(default_factory=list)  # embeddings asked for by name (names in the prompt load too)
    panorama: bool = False  # MultiDiffusion: windowed denoising of a wide image
    sag_scale: float | None = None  # self-attention guidance at this scale; None: off
    tome_ratio: float | None = None  # token merging (tomesd) at this ratio during the job; None: off
    hires: Hires | None = None  # a second pass at a larger size
    safety_check: bool = False  # run the safety checker; flagged images come back blank (Result.nsfw)
    translate: str | None = None  # the prompts' language (an mBART-50 code, or "auto"): translated to English first
    enhance_prompt: bool = False  # add quality phrases to the prompt (backends/local/features/enhance.py)
    # the style whose dialect made the job: the relay sends it to a gateway in this style when it can
    style: Style | None = None
    # the making dialect's own notes (e.g. the original request for a same-style relay); opaque to all other code
    extra: dict[str, Any] = field(default_factory=dict)
    # who asked, for fairness (the key's owner, else the request's `user`)
    owner: str | None = None
    # where it runs: None or "local" (the local queue, unless `model` names a gateway's model), or a gateway name.
    # Set from the request's Route when the dialect builds the job.
    backend: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter

    def features_asked(self) -> list[str]:
        """The optional capabilities this job switches on (their field names), for a gateway that may not carry
        them all (the relay lists those in `Result.dropped`)."""
        return [name for name in FEATURE_FIELDS if getattr(self, name) not in (None, False, [], "")]


# The Job fields that switch on the engine's optional capabilities (backends/local/features/).
FEATURE_FIELDS = ("vae", "embeddings", "panorama", "sag_scale", "tome_ratio", "hires", "safety_check", "translate",
                  "enhance_prompt", "tiling", "refiner", "subseed_strength", "seed_resize_from")


# --------------------------------------------------------------------------------------- the result


# single_file/folder/repo: a local model as found on disk or named by repo id; gateway: a model a gateway serves
# (`gateway:<name>/<model>`); remote: what a gateway's answer said it used.
ModelKind = Literal["single_file", "folder", "repo", "gateway", "remote"]


@dataclass
class ModelInfo:
    """A model the server can load. `title`/`name`/`hash` follow A1111's /sd-models conventions."""

    name: str  # model_name: relative path without extension, separators replaced by "_"
    title: str  # "relative/path.safetensors [shorthash]" (or the name when there is no hash)
    source: str  # file path, folder path, hub repo id, or for a gateway's model its target
    kind: ModelKind
    hash: str | None = None  # A1111 short hash: first 10 hex chars of sha256
    sha256: str | None = None
    family: str | None = None  # "sd1" | "sd2" | "sdxl" once known
    demo: bool = False  # random-weight tiny model


@dataclass
class Result:
    job: Job
    images: list[Image.Image]
    seeds: list[int]
    model: ModelInfo
    sampler: str  # the A1111 sampler name actually used
    schedule: str  # the A1111 schedule type actually used
    scheduler_class: str  # the diffusers scheduler class that ran
    notes: list[str] = field(default_factory=list)  # e.g. a sampler mapped to its nearest equivalent
    loras: list[Lora] = field(default_factory=list)  # the LoRAs applied (the job's own and prompt tags)
    interrupted: bool = False
    skipped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    finished_at: float = 0.0
    backend: str | None = None  # the gateway that answered; None: this server's engine
    dropped: list[str] = field(default_factory=list)  # Job fields the gateway's style could not carry
    batched: int = 1  # images in the largest pipeline call this job shared (1: it ran alone)
    nsfw: list[bool] | None = None  # the safety checker's verdict per image; None: no check ran
    prompt: str | None = None  # the prompt that was encoded, when translation or enhancement changed the job's
    negative_prompt: str | None = None
    not_applied: dict[str, str] = field(default_factory=dict)  # what the job asked for that did not run, and why
    subseeds: list[int] = field(default_factory=list)  # the variation seed of each image (A1111's all_subseeds)
    # generation parameters the engine adds for the infotext, in A1111's keys ("VAE hash", "VAE", "TI hashes", ...)
    params: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None  # the Ray Serve replica(s) that ran it (backends/cluster/); None: this process


@dataclass
class Progress:
    """What a running or waiting job looks like from outside (for /progress, the UI, ModelsLab eta)."""

    job_id: str
    state: str = "queued"  # queued | running | done
    position: int = 0  # jobs ahead in the queue
    step: int = 0
    steps: int = 0
    batch_no: int = 0
    batch_count: int = 1
    started_at: float | None = None
    preview: Image.Image | None = None
    preview_step: int = 0

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.steps or self.state != "running":
            return 0.0
        return min(1.0, (self.batch_no + self.step / self.steps) / max(1, self.batch_count))

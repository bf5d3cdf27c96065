"""The one contract every optional engine capability implements (VAE, embeddings, panorama, SAG, tomesd, safety
checker, translation, prompt enhancement): a value on the Job switches it on, and the engine calls the same hooks
at the same points for all of them (docs/architecture.md "Features"). Each hook has a do-nothing default, so a
feature writes only the ones it needs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager

from PIL import Image

from ...config import Features
from ...job import Job

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Run
    from ..models import LoadedModel


@dataclass
class Setup:
    """What a feature may need to find its models and place its tensors."""

    models_dir: Path
    config: Features
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    sha256: Callable[[Path], str]  # a file's sha256 (the infotext's `VAE hash`, `TI hashes`), remembered on disk


class Feature:
    """One optional capability. `wanted(job)` says whether a job uses it; only then are its hooks called."""

    name = "feature"
    # False: the feature changes the torch UNet or VAE, so a job using it runs on torch even with --cpu-engine openvino
    openvino_ok = True

    def __init__(self, setup: Setup):
        self.setup = setup

    def wanted(self, job: Job) -> bool:
        return False

    def key(self, job: Job) -> tuple | None:
        """Part of the engine's batch key: jobs share a pipeline call only when every feature's key is equal.
        None: the feature does not touch the shared call (it acts on one job's prompts or images only), so jobs
        with and without it may share one."""
        return ()

    def check(self, job: Job) -> None:
        """Refuse a job this feature cannot serve (InvalidRequest, ModelNotFound, ...) before it is queued."""

    def rewrite(self, run: "Run") -> None:
        """Change `run.prompt` / `run.negative` before they are encoded (on the worker thread)."""

    def encoding(self, run: "Run", pipe) -> ContextManager:
        """Around the encoding of `run`'s prompts with `pipe` (e.g. textual-inversion tokens loaded)."""
        return contextlib.nullcontext()

    def pipeline(self, run: "Run", loaded: "LoadedModel", pipe, kwargs: dict) -> tuple[Any, dict]:
        """The pipeline (and call arguments) the call uses: e.g. a pipeline class sharing the model's weights."""
        return pipe, kwargs

    def call(self, runs: list["Run"], pipe, loaded: "LoadedModel") -> ContextManager:
        """Around the pipeline call(s) for `runs` (equal keys): e.g. a VAE swapped in and put back after."""
        return contextlib.nullcontext()

    def finish(self, run: "Run", images: list[Image.Image], loaded: "LoadedModel") -> list[Image.Image]:
        """The images of one call for `run`, after decoding (e.g. the safety checker)."""
        return images


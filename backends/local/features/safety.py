"""The safety checker (`Job.safety_check`, and every job of the styles in `[features] safety_styles`: by default
both Stability styles, whose answers have a CONTENT_FILTERED finish reason). diffusers'
`StableDiffusionSafetyChecker` with its `CLIPImageProcessor`, loaded once from a folder in diffusers' pipeline
layout (`safety_checker/` + `feature_extractor/`, e.g. those two folders of CompVis/stable-diffusion-safety-checker
or of any SD 1.5 pipeline repo): `[features] safety_checker`, else `models/safety-checker/`.

After decoding, each image of the job is checked; a flagged one is replaced by a black image of the same size
(Stability's "blacked out", ModelsLab's "blank") and the verdicts go to `Result.nsfw`, one per image. With no
checker installed the job is not refused: its images come back unchecked, `Result.nsfw` stays None and
`Result.not_applied["safety_check"]` says so, so no answer can claim an image passed a check that never ran.

The checker works on each job's own images after the shared pipeline call, so batch-mates never see each other's
verdicts, and it changes nothing in the UNet or VAE (OpenVINO jobs keep their engine).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from PIL import Image

from ...job import Job
from .base import Feature

log = logging.getLogger(__name__)

INSTALL = ("put a safety checker in diffusers' layout (the safety_checker/ and feature_extractor/ folders of "
           "CompVis/stable-diffusion-safety-checker) in {where}, or set [features] safety_checker")


class SafetyChecker(Feature):
    name = "safety"

    def __init__(self, setup):
        super().__init__(setup)
        self._lock = threading.Lock()
        self._loaded = None  # (feature extractor, checker), loaded by the first job that needs it

    def wanted(self, job: Job) -> bool:
        return bool(job.safety_check) or str(job.style) in self.setup.config.safety_styles

    def key(self, job: Job) -> None:
        return None  # acts on this job's own images only: batch-mates may differ

    def finish(self, run, images: list[Image.Image], loaded) -> list[Image.Image]:
        path = self._path()
        if path is None or not path.is_dir():
            where = path or self.setup.models_dir / "safety-checker"
            run.not_applied["safety_check"] = ("no safety check ran: no safety checker is installed; "
                                               + INSTALL.format(where=where))
            return images
        try:
            verdicts = self._check(images) if images else []
        except (OSError, ValueError) as exc:  # a broken or partial folder: the images go out unchecked, said so
            log.warning("safety checker failed: %s", exc)
            run.not_applied["safety_check"] = f"no safety check ran: the safety checker in {path} could not run: {exc}"
            return images
        if run.nsfw is None:
            run.nsfw = []
        run.nsfw.extend(verdicts)
        return [Image.new(image.mode, image.size) if flagged else image for image, flagged in zip(images, verdicts)]

    # ---------------------------------------------------------------------------------------------- the model

    def _path(self):
        return self.setup.config.model_path("safety_checker", self.setup.models_dir)

    def _model(self):
        if self._loaded is None:
            import torch
            from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
            from transformers import CLIPImageProcessor

            path = self._path()
            # float32 on a CPU: half precision there is slow or lossy, and a verdict should not flip on rounding
            dtype = torch.float32 if self.setup.device.type == "cpu" else self.setup.dtype
            extractor = CLIPImageProcessor.from_pretrained(path / "feature_extractor")
            checker = StableDiffusionSafetyChecker.from_pretrained(path / "safety_checker", dtype=dtype)
            self._loaded = extractor, checker.to(self.setup.device).eval()
            log.info("safety checker loaded from %s", path)
        return self._loaded

    def _check(self, images: list[Image.Image]) -> list[bool]:
        """One verdict per image (True: flagged). Locked: the model loads once."""
        with self._lock:
            extractor, checker = self._model()
            rgb = [image.convert("RGB") for image in images]
            clip_input = extractor(rgb, return_tensors="pt").pixel_values.to(checker.device, checker.dtype)
            # the checker blacks out flagged arrays itself; the black PIL images are made in finish()
            _, flagged = checker(clip_input=clip_input, images=[np.asarray(image) for image in rgb])
        return [bool(f) for f in flagged]

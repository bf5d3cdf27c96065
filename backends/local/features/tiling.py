"""Seamless tiling (`Job.tiling`, A1111's `tiling`, docs/reference/a1111_features.md §8): every `torch.nn.Conv2d`
of the model's UNet and VAE pads circularly during the job's call, so the image wraps in both directions. Convs
that pad nothing themselves (the VAE's downsamplers pad explicitly with zeros) are unaffected, as in A1111.

The modules are the loaded model's, shared by its image-to-image variants (a hires pass tiles too), and get their
padding mode back after the call, even when it fails. A second checkpoint within the job (a refiner, a hires
model) is not tiled: A1111 drops tiling on such a mid-job swap too."""

from __future__ import annotations

import contextlib

import torch

from ...job import Job
from .base import Feature

CIRCULAR = "circular"


def _convs(*modules) -> list[torch.nn.Conv2d]:
    found: dict[int, torch.nn.Conv2d] = {}
    for module in modules:
        if module is None:
            continue
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                found.setdefault(id(m), m)
    return list(found.values())


@contextlib.contextmanager
def circular_padding(*modules):
    """Every Conv2d in `modules` pads circularly inside the block; each gets its own mode back after."""
    convs = _convs(*modules)
    before = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = CIRCULAR  # Conv2d pads with F.pad(mode=...) itself whenever the mode is not zeros
        yield
    finally:
        for conv, mode in zip(convs, before):
            conv.padding_mode = mode


class Tiling(Feature):
    name = "tiling"
    openvino_ok = False  # the OpenVINO runner compiled the convs with zero padding

    def wanted(self, job: Job) -> bool:
        return bool(job.tiling)

    def key(self, job: Job) -> tuple:
        return (True,)

    def rewrite(self, run) -> None:
        run.params["Tiling"] = "True"

    def call(self, runs, pipe, loaded):
        parts = [getattr(p, name, None) for p in (pipe, loaded.pipe) for name in ("unet", "vae")]
        return circular_padding(*parts)

"""Token merging (`Job.tome_ratio`, tomesd, https://github.com/dbolya/tomesd): `tomesd.apply_patch` on the
pipeline for the length of the call, `tomesd.remove_patch` after (also on error), so the next job runs the plain
UNet.

tomesd 0.1.3 and diffusers 0.42: the patch swaps each `BasicTransformerBlock`'s class for one whose forward is
tomesd's own copy of that block's forward (diffusers ~0.14). For the blocks SD1, SD2 and SDXL use (norm_type
"layer_norm", no positional embedding, no GLIGEN, no feed-forward chunking) it computes what 0.42's forward
computes, and 0.42's Transformer2DModel still calls blocks with the keywords it takes: at ratio 0 the images are
byte-identical to the unpatched UNet's (tests/test_feature_unet.py). Around it here:

- `max_downsample`: tomesd merges only in layers with at most this downsampling, 1 by default (the full-resolution
  layers, where SD1/SD2 spend most attention time). SDXL (and the tiny test models) have no attention at full
  resolution, so there the default merges nothing; it is set to the first level that has attention (SD1/SD2: 1,
  SDXL: 2).
- the generator: tomesd picks its merge destinations at random from a generator it forks from torch's global RNG
  on first use, so an image would depend on whatever drew random numbers before. A generator seeded alike for every
  call makes a job's images depend on its own seed only; the choice is shared by every image of a call and the
  draws per call do not depend on the batch, so batching does not change them either (except with CFG off and an
  odd batch, where tomesd turns the randomness off).
- with SAG (`Job.sag_scale`), the mid block's transformer blocks are left unpatched: SAG reads the mid block's
  self-attention map and reshapes it to the block's full token grid (SD1/SD2 never merge there at
  max_downsample 1; the tiny test models would).
- after `remove_patch`: the `_tome_info` it leaves on the modules (its hooks list and generator) is removed.
"""

from __future__ import annotations

import contextlib

import tomesd
import torch

from ...job import InvalidRequest, Job
from .base import Feature

MAX_RATIO = 0.75  # tomesd's bound with its default 2×2 destination stride: 1 - 1/(sx·sy)
MERGE_SEED = 0


def attention_downsample(unet) -> int:
    """The smallest downsampling factor at which `unet` has transformer blocks (SD1/SD2: 1, SDXL: 2)."""
    for level, kind in enumerate(unet.config.down_block_types):
        if "CrossAttn" in kind:
            return 2**level
    return 1


@contextlib.contextmanager
def tome_patched(pipe, ratio: float, keep_mid_block: bool = False):
    unet = pipe.unet
    try:
        tomesd.apply_patch(pipe, ratio=ratio, max_downsample=attention_downsample(unet))
        if keep_mid_block and unet.mid_block is not None:
            for module in unet.mid_block.modules():
                if type(module).__name__ == "ToMeBlock":
                    module.__class__ = module._parent
        device = unet.device if unet.device.type in ("cpu", "cuda") else torch.device("cpu")
        unet._tome_info["args"]["generator"] = torch.Generator(device).manual_seed(MERGE_SEED)
        yield
    finally:
        tomesd.remove_patch(pipe)
        for module in unet.modules():
            module.__dict__.pop("_tome_info", None)


class TokenMerging(Feature):
    name = "tome"
    openvino_ok = False  # the torch UNet's transformer blocks are patched

    def wanted(self, job: Job) -> bool:
        return job.tome_ratio is not None

    def key(self, job: Job) -> tuple:
        return (float(job.tome_ratio),)

    def check(self, job: Job) -> None:
        if not 0 <= job.tome_ratio <= MAX_RATIO:
            raise InvalidRequest(f"tome_ratio must be between 0 and {MAX_RATIO}, got {job.tome_ratio}")

    def call(self, runs, pipe, loaded):
        job = runs[0].job
        return tome_patched(pipe, float(job.tome_ratio), keep_mid_block=job.sag_scale is not None)

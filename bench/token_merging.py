#!/usr/bin/env python3
"""Seconds per image with and without token merging (tomesd), on an SD1.5-sized random-weight model.

    python bench/token_merging.py [--sizes 512,1024] [--steps 4] [--ratio 0.5] [--runs 1] [--threads 2]
                           [--device auto] [--models-dir ~/.cache/sdgate-bench/models]

For each size, two rows, interleaved run by run so drift hits them alike, each warmed once (one step) first:

  bare  diffusers' own `StableDiffusionPipeline(prompt=..., num_inference_steps=...)`, Euler, CFG 7.5
  tome  the same call inside the engine's tomesd patch (backends/local/features/tome.py: `tomesd.apply_patch`
        at --ratio, max_downsample 1 for SD1.5, a seeded merge generator), removed after

Per row: seconds per image (median of --runs), per step (from the call's start to the last step's end, over the
steps: the UNet with CFG, plus the text encoder's ~0.1 s spread over them) and for the VAE decode (the rest); then
bare ÷ tome for the whole image and for the steps (tomesd changes only the UNet), and the largest pixel difference
between the two images (not 0: merging took effect). Images are noise (random weights); the compute is SD1.5's.
The model is built once into --models-dir (bench/serving.py `write_random_model`) and reused. Figures only: nothing
is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backends.local.features.tome import tome_patched  # noqa: E402
from bench.serving import SD15_NAME, write_random_sd15  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse, detailed, sharp focus"
SEED = 1234
CFG = 7.5
DEFAULT_MODELS_DIR = Path.home() / ".cache" / "sdgate-bench" / "models"


def load(args):
    import diffusers

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    write_random_sd15(args.models_dir, device, dtype)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(args.models_dir / "Stable-diffusion" / SD15_NAME,
                                                             dtype=dtype)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one(pipe, size: int, steps: int, ratio: float | None) -> dict:
    """One image: seconds in all, per UNet step, and the pixels."""
    ends: list[float] = []

    def on_step(_pipe, _i, _t, kwargs):
        synchronize()
        ends.append(time.perf_counter())
        return kwargs

    def call():
        return pipe(prompt=PROMPT, num_inference_steps=steps, height=size, width=size, guidance_scale=CFG,
                    generator=torch.Generator("cpu").manual_seed(SEED), callback_on_step_end=on_step).images[0]

    t0 = time.perf_counter()
    if ratio is None:
        image = call()
    else:
        with tome_patched(pipe, ratio):
            image = call()
    synchronize()
    total = time.perf_counter() - t0
    return {"total": total, "step": (ends[-1] - t0) / len(ends), "pixels": np.asarray(image, dtype=np.int16)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="512,1024", help="image sides, comma separated")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--ratio", type=float, default=0.5, help="tomesd's share of tokens merged")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per row (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="auto", help="auto: cuda when there is one, else cpu")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                    help="where the random model is built once and reused")
    args = ap.parse_args()
    args.models_dir = args.models_dir.expanduser()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]

    t0 = time.perf_counter()
    pipe = load(args)
    print(f"SD1.5-sized random weights on {pipe.device} ({str(pipe.unet.dtype).removeprefix('torch.')}), "
          f"Euler, CFG {CFG}, {args.steps} steps, {args.threads} threads; loaded in {time.perf_counter() - t0:.1f} s")
    print(f"{'size':>6} {'row':<5} {'s/image':>9} {'s/step':>8} {'decode s':>9}")
    for size in sizes:
        rows = {"bare": None, "tome": args.ratio}
        for ratio in rows.values():  # warm-up: allocator, kernels, oneDNN primitives for this shape
            one(pipe, size, 1, ratio)
        results: dict[str, list[dict]] = {name: [] for name in rows}
        for _ in range(args.runs):
            for name, ratio in rows.items():
                results[name].append(one(pipe, size, args.steps, ratio))
        total, step = {}, {}
        for name, runs in results.items():
            total[name] = statistics.median(r["total"] for r in runs)
            step[name] = statistics.median(r["step"] for r in runs)
            print(f"{size:>5}² {name:<5} {total[name]:9.2f} {step[name]:8.2f} "
                  f"{total[name] - step[name] * args.steps:9.2f}", flush=True)
        diff = int(np.abs(results["bare"][-1]["pixels"] - results["tome"][-1]["pixels"]).max())
        print(f"{size:>5}² bare ÷ tome (ratio {args.ratio:g}): {total['bare'] / total['tome']:.2f}× per image, "
              f"{step['bare'] / step['tome']:.2f}× per step (largest pixel difference {diff})", flush=True)


if __name__ == "__main__":
    main()

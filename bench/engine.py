#!/usr/bin/env python3
"""Engine overhead: the bare diffusers pipeline call vs the engine running the same Job.

    python bench/engine.py [--family sd1|sdxl] [--size 256] [--steps 20] [--runs 7] [--threads 1]

Prints the median time of each and their ratio (engine ÷ bare). Runs alternate so drift hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backends.job import Job  # noqa: E402
from backends.local.engine import LocalEngine  # noqa: E402
from backends.local.models import ModelManager  # noqa: E402
from backends.local.schedulers import make_scheduler
from backends.samplers import resolve_sampler  # noqa: E402
from backends.local.tiny import write_tiny_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["sd1", "sdxl"], default="sd1")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    models_dir = Path(tempfile.mkdtemp(prefix="sdgate-bench-"))
    write_tiny_models(models_dir)
    models = ModelManager(models_dir, default=f"tiny-{args.family}", device=args.device)
    engine = LocalEngine(models)
    loaded = models.get(None)
    pipe = loaded.pipe

    prompt = "a photograph of an astronaut riding a horse, detailed, sharp focus"
    job = Job(prompt=prompt, width=args.size, height=args.size, steps=args.steps, cfg_scale=7.0,
              sampler="Euler", seed=1234)
    choice = resolve_sampler(job.sampler, job.schedule)

    def bare() -> float:
        t0 = time.perf_counter()
        pipe.scheduler = make_scheduler(loaded.base_scheduler, choice)
        pipe(prompt=prompt, negative_prompt="", width=args.size, height=args.size,
             num_inference_steps=args.steps, guidance_scale=7.0,
             generator=[torch.Generator("cpu").manual_seed(1234)], output_type="pil")
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def through_engine() -> float:
        t0 = time.perf_counter()
        engine.generate(job)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    bare(), through_engine()  # warm-up: first calls allocate and compile kernels
    bare_times, engine_times = [], []
    for _ in range(args.runs):
        bare_times.append(bare())
        engine_times.append(through_engine())
    b, e = statistics.median(bare_times), statistics.median(engine_times)
    print(f"model tiny-{args.family}, {args.size}x{args.size}, {args.steps} steps, device {args.device}, "
          f"{args.threads} thread(s), {args.runs} runs")
    print(f"bare pipeline call  median {b * 1000:8.1f} ms   (min {min(bare_times) * 1000:.1f})")
    print(f"engine (same Job)   median {e * 1000:8.1f} ms   (min {min(engine_times) * 1000:.1f})")
    print(f"ratio engine/bare   {e / b:.3f}   (overhead {100 * (e / b - 1):+.1f} %)")


if __name__ == "__main__":
    main()

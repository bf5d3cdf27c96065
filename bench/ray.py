#!/usr/bin/env python3
"""The engine on Ray Serve (backends/cluster/) against one process, on this machine: images/s with 1 and 2 CPU
replicas, and what the Ray hop adds to a lone request. Needs `pip install -e '.[ray]'`.

    python bench/ray.py [--size 128] [--steps 20] [--requests 8] [--repeat 2] [--max-batch 1] [--model tiny-sd1]

Rows, all in one run, every engine on one torch thread (a replica gets `[ray] num_cpus = 1`):
  bare diffusers    the loaded pipeline called directly, one image at a time (the baseline of the ratios)
  one process       the server's queue and engine (`create_service`), no Ray
  ray, N replicas   the same queue at the ingress, each batch sent to a replica through the Serve handle

For each: a lone request's seconds (median of --repeat), and `--requests` jobs (distinct owners and seeds)
submitted at once: images/s (median). `--max-batch 1` (default) keeps the queue from batching, so the rows compare
replicas, not batch sizes. Figures only: nothing here asserts a time. On a 2-core machine 2 replicas can at best
double one; the point here is that they run side by side, the README's "Scaling on paper" says what a GPU cluster
adds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# this file is named ray.py: its folder must not shadow the ray package, for this process or its Ray workers
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backends.assembly import create_service  # noqa: E402
from backends.config import Cluster, Config, Serving  # noqa: E402
from backends.job import Job  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse, detailed, sharp focus"


def job(args, seed: int, owner: str = "bench") -> Job:
    return Job(prompt=PROMPT, width=args.size, height=args.size, steps=args.steps, seed=seed, model=args.model,
               sampler="Euler", owner=owner)


def lone(service, args) -> float:
    times = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        service.queue.run(job(args, 10 + i))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(service, args) -> float:
    rates = []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        tickets = [service.queue.submit(job(args, 100 * r + i, owner=f"owner{i}")) for i in range(args.requests)]
        for ticket in tickets:
            ticket.result(600)
        rates.append(args.requests / (time.perf_counter() - t0))
    return statistics.median(rates)


def bare(service, args) -> float:
    """Seconds per image of the pipeline called directly (the same model, size, steps, scheduler kind)."""
    pipe = service.models.get(args.model).pipe
    times = []
    for i in range(args.repeat + 1):
        t0 = time.perf_counter()
        pipe(PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps,
             generator=torch.Generator("cpu").manual_seed(i))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first call warms up


def config(root: Path, args, replicas: int = 0) -> Config:
    cfg = Config(demo=True, models_dir=root / "models", outputs_dir=root / "outputs", dtype="fp32", threads=1,
                 serving=Serving(max_batch=args.max_batch))
    if replicas:
        cfg.ray = Cluster(enabled=True, replicas=replicas, num_cpus=1, models_per_replica=1)
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=1)
    p.add_argument("--model", default="tiny-sd1")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="sdgate-bench-ray-"))
    print(f"{args.size}², {args.steps} steps, {args.model}, {args.requests} concurrent jobs, max_batch "
          f"{args.max_batch}, {os.cpu_count()} CPUs; medians of {args.repeat}")
    rows = []
    service = create_service(config(root, args))
    try:
        bare_s = bare(service, args)
        rows.append(("bare diffusers", bare_s, 1 / bare_s))
        service.queue.run(job(args, 1))  # warm
        rows.append(("one process", lone(service, args), throughput(service, args)))
    finally:
        service.close()
    for replicas in (1, 2):
        t0 = time.perf_counter()
        service = create_service(config(root, args, replicas))
        started = time.perf_counter() - t0
        try:
            with concurrent.futures.ThreadPoolExecutor(replicas) as pool:  # warm every replica
                list(pool.map(lambda i: service.queue.run(job(args, i, owner=f"warm{i}")), range(2 * replicas)))
            rows.append((f"ray, {replicas} replica{'s' if replicas > 1 else ''} (up in {started:.0f} s)",
                         lone(service, args), throughput(service, args)))
        finally:
            service.close()
    base = rows[0][2]
    print(f"{'':34} {'lone request s':>15} {'images/s':>9} {'÷ bare':>7}")
    for name, seconds, rate in rows:
        print(f"{name:34} {seconds:15.3f} {rate:9.2f} {rate / base:6.2f}×")
    hop = rows[2][1] - rows[1][1]
    print(f"the Ray hop on a lone request (1 replica − one process): {hop * 1000:+.0f} ms")
    print(f"2 replicas ÷ 1 replica, images/s: {rows[3][2] / rows[2][2]:.2f}×")


if __name__ == "__main__":
    main()

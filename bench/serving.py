#!/usr/bin/env python3
"""What the queue's serving gives (backends/queue.py): dynamic batching, fairness between owners, and the cost of
the HTTP path over the bare engine. Real servers on 127.0.0.1 (the demo service and `create_app`).

    python bench/serving.py [--sizes 128,256 | --size 128] [--steps 20] [--model tiny-sd1] [--repeat 3]
                            [--max-batches 0] [--threads 1]
    python bench/serving.py --sd15            # GPU: SD1.5-sized random weights, 512², max_batch 1/2/4/8

For each size and `[queue] max_batch` (0: the device's default, backends/assembly.py DEFAULT_MAX_BATCH):

  (a) 8 same-shaped A1111 /sdapi/v1/txt2img requests (seeds s..s+7) sent at once vs the same 8 one after another:
      wall time of each (median of --repeat), images/s and their ratio, pipeline calls used (`queue.calls`), and
      the largest difference between an image made in a batch and the same seed's image made alone (uint8 levels).
  (b) fairness: owner A queues 20 jobs, then owner B submits one: B's wait ÷ one job's time, with B's job of the
      same shape (it may join A's next batch) and of another shape (it runs alone, in its owner's turn); A's 20
      jobs' span ÷ one job is what B would wait behind a first-in-first-out queue.
  (c) a lone request end to end over HTTP ÷ the bare engine (`service.engine.generate(job)`, the same job, warm).

Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from backends.assembly import DEFAULT_MAX_BATCH, create_service  # noqa: E402
from backends.config import Config, Serving  # noqa: E402
from backends.job import Job  # noqa: E402
from backends.local.models import ModelManager  # noqa: E402
from webui.app import create_app  # noqa: E402
from webui.server import serve_in_thread  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse, detailed, sharp focus"
CONCURRENT = 8
QUEUED = 20  # owner A's jobs in (b)
SEED = 1000
SD15_NAME = "sd15-random"


# ------------------------------------------------------------------------------------------ the requests


def body(args, size: int, seed: int) -> dict:
    return {"prompt": PROMPT, "seed": seed, "steps": args.steps, "width": size, "height": size,
            "sampler_name": "Euler", "cfg_scale": 7.0}


def job(args, size: int, seed: int, owner: str | None = None, steps: int | None = None) -> Job:
    return Job(prompt=PROMPT, seed=seed, steps=steps or args.steps, width=size, height=size, sampler="Euler",
               cfg_scale=7.0, model=args.model, owner=owner)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def txt2img(client: httpx.Client, url: str, payload: dict) -> np.ndarray:
    reply = client.post(url + "/sdapi/v1/txt2img", json=payload)
    reply.raise_for_status()
    return pixels(reply.json()["images"][0])


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ (a) batching


def serial(url: str, payloads: list[dict]) -> tuple[float, list[np.ndarray]]:
    with httpx.Client(timeout=600) as client:
        started = time.perf_counter()
        images = [txt2img(client, url, p) for p in payloads]
        return time.perf_counter() - started, images


def concurrent(url: str, payloads: list[dict]) -> tuple[float, list[np.ndarray]]:
    images: list[np.ndarray | None] = [None] * len(payloads)
    errors: list[BaseException] = []
    clients = [httpx.Client(timeout=600) for _ in payloads]
    gate = threading.Barrier(len(payloads) + 1)

    def send(i: int) -> None:
        gate.wait()
        try:
            images[i] = txt2img(clients[i], url, payloads[i])
        except BaseException as e:  # noqa: BLE001 - reported after the join
            errors.append(e)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return took, images  # type: ignore[return-value]


def batching(service, url: str, args, size: int) -> dict:
    payloads = [body(args, size, SEED + i) for i in range(CONCURRENT)]
    serial(url, payloads[:1])  # warm: this size's first call
    concurrent(url, payloads)  # warm: the batched shapes
    s_times, c_times, s_calls, c_calls, diff = [], [], [], [], 0
    for _ in range(args.repeat):  # alternating, so drift hits both alike
        calls = service.queue.calls
        took, alone = serial(url, payloads)
        s_times.append(took)
        s_calls.append(service.queue.calls - calls)
        calls = service.queue.calls
        took, together = concurrent(url, payloads)
        c_times.append(took)
        c_calls.append(service.queue.calls - calls)
        diff = max(diff, max(int(np.abs(a - b).max()) for a, b in zip(alone, together)))
    s, c = statistics.median(s_times), statistics.median(c_times)
    return {"serial": s, "concurrent": c, "serial_calls": s_calls, "concurrent_calls": c_calls,
            "speedup": s / c, "diff": diff, "one": s / CONCURRENT}


# ------------------------------------------------------------------------------------------ (b) fairness


def lone_job(service, args, size: int) -> float:
    times = []
    for i in range(args.repeat):
        started = time.perf_counter()
        service.queue.submit(job(args, size, SEED + i, owner="solo")).result()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fairness(service, args, size: int, other_shape: bool) -> dict:
    queue = service.queue
    queued = [queue.submit(job(args, size, SEED + 100 + i, owner="A")) for i in range(QUEUED)]
    b = queue.submit(job(args, size, SEED + 200, owner="B", steps=args.steps + 1 if other_shape else None))
    b.result()
    for t in queued:
        t.result()
    return {"b_wait": b.finished_at - b.submitted_at,
            "a_span": max(t.finished_at for t in queued) - min(t.submitted_at for t in queued)}


# ------------------------------------------------------------------------------------------ (c) HTTP vs engine


def overhead(service, url: str, args, size: int) -> dict:
    payload, bare_job = body(args, size, SEED), job(args, size, SEED)
    http_times, engine_times = [], []
    with httpx.Client(timeout=600) as client:
        txt2img(client, url, payload)
        service.engine.generate(bare_job)  # the queue is idle: the worker is not in the pipeline
        for _ in range(args.repeat):
            started = time.perf_counter()
            txt2img(client, url, payload)
            http_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            service.engine.generate(job(args, size, SEED))
            synchronize()
            engine_times.append(time.perf_counter() - started)
    h, e = statistics.median(http_times), statistics.median(engine_times)
    return {"http": h, "engine": e, "ratio": h / e}


# ------------------------------------------------------------------------------------------ the SD1.5-sized model


def write_random_model(models_dir: Path, name: str, skeleton: str, device: str, dtype: torch.dtype) -> None:
    """A random-weight model of a real architecture (a shipped skeleton's configs, as the single-file loader uses
    them: `sd15`, `sdxl`, ...) as a diffusers folder models_dir/Stable-diffusion/<name>. Images are noise; the
    compute is the real model's. SDXL skeletons (a second text encoder) make an SDXL pipeline."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = models_dir / "Stable-diffusion" / name
    if (folder / "model_index.json").is_file():
        return
    config_dir = ModelManager(models_dir)._config_dir(skeleton)  # skeleton + tokenizer files
    scheduler_config = diffusers.DDIMScheduler.load_config(config_dir / "scheduler")
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    xl = (config_dir / "text_encoder_2").is_dir()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        parts = dict(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder")),
            tokenizer=CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
            scheduler=scheduler,
        )
        if xl:
            pipe = diffusers.StableDiffusionXLPipeline(
                **parts,
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2")),
                tokenizer_2=CLIPTokenizer.from_pretrained(config_dir / "tokenizer_2"),
            )
        else:
            pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)


def write_random_sd15(models_dir: Path, device: str, dtype: torch.dtype) -> None:
    """SD1.5's architecture with random weights, as models_dir/Stable-diffusion/sd15-random."""
    write_random_model(models_dir, SD15_NAME, "sd15", device, dtype)


# ------------------------------------------------------------------------------------------ main


def start(args, models_dir: Path, root: Path, max_batch: int):
    config = Config(demo=True, models_dir=models_dir, outputs_dir=root / f"outputs-{max_batch}", model=args.model,
                    threads=args.threads or None, device=args.device, dtype=args.dtype,
                    serving=Serving(max_batch=max_batch, max_pending_per_owner=QUEUED + 4, gather_ms=args.gather_ms))
    service = create_service(config)
    return service, serve_in_thread(create_app(service))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,256", help="image sides, comma separated")
    ap.add_argument("--size", type=int, help="one side (instead of --sizes)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default=None, help="default: tiny-sd1 (--sd15: a random-weight SD1.5)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each figure (median)")
    ap.add_argument("--max-batches", default=None,
                    help="[queue] max_batch values to compare (0: the device's default; --sd15: 1,2,4,8)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default; more than one thrashes on a busy 2-core machine)")
    ap.add_argument("--gather-ms", type=int, default=0, help="[queue] gather_ms: wait for batch-mates")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--sd15", action="store_true", help="GPU run: SD1.5-sized random weights at 512²")
    args = ap.parse_args()
    sizes = [args.size] if args.size else [int(s) for s in args.sizes.split(",")]
    if args.sd15:
        args.model = args.model or SD15_NAME
        sizes = [args.size or 512] if args.sizes == ap.get_default("sizes") else sizes
    args.model = args.model or "tiny-sd1"
    batches = [int(b) for b in (args.max_batches or ("1,2,4,8" if args.sd15 else "0")).split(",")]

    root = Path(tempfile.mkdtemp(prefix="sdgate-bench-serving-"))
    models_dir = root / "models"
    started = time.perf_counter()
    if args.sd15:
        device = "cuda" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "cpu"
        dtype = torch.float16 if device == "cuda" and args.dtype in ("auto", "fp16") else torch.float32
        write_random_sd15(models_dir, device, dtype)
        print(f"built {SD15_NAME} (SD1.5 architecture, random weights) in {time.perf_counter() - started:.0f} s")

    for max_batch in batches:
        service, server = start(args, models_dir, root, max_batch)
        try:
            print(f"\nmodel {args.model}, {args.steps} steps, device {service.device} ({service.dtype}), "
                  f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs, max_batch "
                  f"{service.queue.max_batch}" + (" (default)" if not max_batch else "")
                  + f", median of {args.repeat}")
            for size in sizes:
                a = batching(service, server.url, args, size)
                one = lone_job(service, args, size)
                same = fairness(service, args, size, other_shape=False)
                other = fairness(service, args, size, other_shape=True)
                c = overhead(service, server.url, args, size)
                print(f"  {size}x{size}")
                print(f"    (a) {CONCURRENT} txt2img serial      {a['serial']:7.2f} s  {CONCURRENT / a['serial']:6.2f} "
                      f"images/s  pipeline calls {a['serial_calls']}")
                print(f"        {CONCURRENT} txt2img concurrent  {a['concurrent']:7.2f} s  "
                      f"{CONCURRENT / a['concurrent']:6.2f} images/s  pipeline calls {a['concurrent_calls']}")
                print(f"        images/s concurrent ÷ serial  {a['speedup']:.2f}x   batched vs alone: max "
                      f"difference {a['diff']} uint8 level(s)")
                print(f"    (b) one job alone (queue)  {one:.3f} s;  A queues {QUEUED}, then B submits one:")
                print(f"        B same shape   waits {same['b_wait']:6.2f} s = {same['b_wait'] / one:5.2f} jobs   "
                      f"(A's {QUEUED} span {same['a_span']:.2f} s = {same['a_span'] / one:.1f} jobs: a FIFO's wait)")
                print(f"        B other shape  waits {other['b_wait']:6.2f} s = {other['b_wait'] / one:5.2f} jobs   "
                      f"(A's {QUEUED} span {other['a_span']:.2f} s = {other['a_span'] / one:.1f} jobs)")
                print(f"    (c) lone request: HTTP end to end {c['http'] * 1000:8.1f} ms   bare engine "
                      f"{c['engine'] * 1000:8.1f} ms   ratio {c['ratio']:.3f} ({100 * (c['ratio'] - 1):+.1f} %)")
        finally:
            server.stop()
            service.close()
    print(f"\n(default max_batch per device: {DEFAULT_MAX_BATCH}; total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

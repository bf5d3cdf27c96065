#!/usr/bin/env python3
"""Seconds per image: the bare diffusers call vs the engine in fp32, bf16 and on OpenVINO, on an SD1.5-sized model.

    python bench/speed.py [--size 512] [--steps 4] [--runs 2] [--threads 2] [--rows bare,fp32,bf16,openvino]
                          [--models-dir ~/.cache/sdgate-bench/models]
    python bench/speed.py --gpu [--batches 1,4,8] [--gpu-models sd15,sdxl] [--no-compile] [--steps 20]

CPU (the default): one process, rows interleaved run by run so drift hits them alike, each warmed once first:

  bare      diffusers' own `StableDiffusionPipeline(...)(prompt=..., num_inference_steps=...)`, fp32, on the same
            modules as the engine's fp32 model, with an Euler scheduler
  fp32      `LocalEngine.generate(Job)` through `ModelManager` (dtype fp32: `--dtype fp32`), sampler Euler
  bf16      the same with dtype bf16 (what `--dtype auto` picks on a CPU with native bf16)
  openvino  the same on `LocalEngine(..., cpu_engine="openvino")` (`--cpu-engine openvino`, backends/local/openvino.py)
            over the bf16 models; the UNet and VAE are converted once (cached beside the models) and compiled per shape

Per row: seconds per image, per UNet step (the mean interval between step ends; the first step, which also pays
for the text encoders and setup, is left out), for the VAE decode (from the last step's end to the image), the
rest (text encoders, setup), the process's peak RSS while the row ran and how far above the RSS before its call, and
the ratio to the engine's fp32 seconds per image.

--gpu: on CUDA (fp16), a random SD1.5 at 512² and a random SDXL at 1024² through the engine, batch 1/4/8: it/s
(UNet steps per second of the batch), seconds per batch, images/s and peak GPU memory, eager and then with
torch.compile on the UNet (each batch size warmed, i.e. compiled, before it is timed).

The random-weight models (the shipped skeleton configs: backends/local/skeletons/) are built once into --models-dir
and reused. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backends.assembly import native_bf16  # noqa: E402
from backends.job import Job  # noqa: E402
from backends.local.engine import LocalEngine  # noqa: E402
from backends.local.models import ModelManager  # noqa: E402
from serving import SD15_NAME, write_random_model, write_random_sd15  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse, detailed, sharp focus"
SEED = 1234
CFG = 7.5  # diffusers' default, so the bare call and the engine do the same work
SDXL_NAME = "sdxl-random"
DEFAULT_MODELS_DIR = Path.home() / ".cache" / "sdgate-bench" / "models"
GIB = 1 << 30


# ------------------------------------------------------------------------------------------ models


def write_random_sdxl(models_dir: Path, device: str, dtype: torch.dtype, skeleton: str = "sdxl",
                      name: str = SDXL_NAME) -> None:
    """SDXL base's architecture (the shipped `sdxl` skeleton) with random weights, as models_dir/Stable-diffusion/<name>."""
    write_random_model(models_dir, name, skeleton, device, dtype)


def weights_gib(pipe) -> float:
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / GIB


# ------------------------------------------------------------------------------------------ measuring


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """The process's largest resident set while the block runs (sampled every 10 ms; Linux /proc)."""

    def __enter__(self):
        self.before = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


class Steps:
    """Step-end timestamps: the engine's Control (report) and a diffusers callback_on_step_end both feed it."""

    interrupted = False
    skipped = False

    def __init__(self, sync: bool = False):
        self.sync = sync
        self.ends: list[float] = []

    def mark(self) -> None:
        if self.sync:  # CUDA runs ahead of Python: time the work, not its launch
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def report(self, step, steps, batch_no, preview=None) -> None:
        self.mark()

    def callback(self, pipe, i, t, kwargs):
        self.mark()
        return kwargs


def measure(call, sync: bool = False) -> dict:
    """Run `call(steps)` once: seconds in all, per step (mean interval after the first), decode (last step's end
    to the returned image), RSS; and the image's pixel spread (noise, not a blank: the maths stayed finite)."""
    steps = Steps(sync)
    with RssPeak() as mem:
        t0 = time.perf_counter()
        image = call(steps)
        if sync:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    ends = steps.ends
    step = statistics.mean(b - a for a, b in zip(ends, ends[1:])) if len(ends) > 1 else float("nan")
    decode = t1 - ends[-1] if ends else float("nan")
    return {"total": t1 - t0, "step": step, "decode": decode, "first": ends[0] - t0 if ends else float("nan"),
            "steps": len(ends), "peak": mem.peak, "above": mem.peak - mem.before,
            "std": float(np.asarray(image.convert("RGB"), dtype=np.float32).std())}


# ------------------------------------------------------------------------------------------ CPU rows


class Row:
    def __init__(self, name: str, what: str, run, weights: float, check=None):
        self.name, self.what, self.run, self.weights, self.check = name, what, run, weights, check
        self.results: list[dict] = []
        self.skip: str | None = None


def job(args, steps: int, batch: int = 1) -> Job:
    return Job(prompt=PROMPT, negative_prompt="", width=args.size, height=args.size, steps=steps, cfg_scale=CFG,
               sampler="Euler", seed=SEED, batch_size=batch, model=args.model)


def engine_row(name: str, what: str, engine: LocalEngine, args, sync: bool = False) -> Row:
    last = {}

    def run(steps_ticker: Steps, steps: int):
        result = engine.generate(job(args, steps), steps_ticker)
        last["notes"] = result.notes
        return result.images[0]

    loaded = engine.models.get(args.model)
    row = Row(name, what, run, weights_gib(loaded.pipe))
    row.last = last
    return row


def bare_row(loaded, args) -> Row:
    import diffusers

    components = {k: v for k, v in loaded.pipe.components.items()
                  if k in inspect.signature(diffusers.StableDiffusionPipeline).parameters}
    scheduler = diffusers.EulerDiscreteScheduler.from_config(loaded.base_scheduler.config)
    pipe = diffusers.StableDiffusionPipeline(**{**components, "scheduler": scheduler, "safety_checker": None,
                                                "feature_extractor": None, "requires_safety_checker": False})
    pipe.set_progress_bar_config(disable=True)

    def run(steps_ticker: Steps, steps: int):
        return pipe(prompt=PROMPT, num_inference_steps=steps, height=args.size, width=args.size,
                    guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED),
                    callback_on_step_end=steps_ticker.callback).images[0]

    return Row("bare", "diffusers StableDiffusionPipeline, fp32, same modules", run, weights_gib(pipe))


def openvino_row(models: ModelManager, args) -> Row:
    what = (f"LocalEngine(cpu_engine='openvino') over the {str(models.dtype).removeprefix('torch.')} models "
            "(weights: the torch modules; OpenVINO's compiled copies come on top)")
    if "cpu_engine" not in inspect.signature(LocalEngine).parameters:
        row = Row("openvino", what, None, 0.0)
        row.skip = ("LocalEngine has no cpu_engine parameter yet; expected: LocalEngine(models, cpu_engine="
                    "'openvino', threads=N), as create_service(Config(cpu_engine='openvino')) builds it")
        return row
    try:
        engine = LocalEngine(models, cpu_engine="openvino", threads=args.threads)
    except Exception as error:  # noqa: BLE001 - openvino not installed, no CPU plugin...: the row says so
        row = Row("openvino", what, None, 0.0)
        row.skip = f"LocalEngine(cpu_engine='openvino') failed: {type(error).__name__}: {error}"
        return row
    row = engine_row("openvino", what, engine, args)
    runner = getattr(engine, "openvino", None)
    if runner is None:
        row.skip = "the engine made no OpenVINO runner (not a CPU?)"
        return row
    row.runner = runner
    return row


def cpu(args) -> None:
    torch.set_num_threads(args.threads)
    models_dir = args.models_dir
    started = time.perf_counter()
    write_random_sd15(models_dir, "cpu", torch.float32)
    print(f"model {SD15_NAME} (SD1.5 architecture, random weights) in {models_dir} "
          f"({time.perf_counter() - started:.0f} s to build or find)")
    wanted = args.rows.split(",")
    fp32_models = ModelManager(models_dir, default=args.model, dtype=torch.float32, cache_size=1)
    bf16_models = ModelManager(models_dir, default=args.model, dtype=torch.bfloat16, cache_size=1)
    fp32_engine = LocalEngine(fp32_models)
    rows = []
    if "bare" in wanted:
        rows.append(bare_row(fp32_models.get(args.model), args))
    if "fp32" in wanted or "bare" in wanted:  # the reference of the ratios
        rows.append(engine_row("fp32", "LocalEngine, ModelManager dtype fp32 (--dtype fp32)", fp32_engine, args))
    if "bf16" in wanted:
        rows.append(engine_row("bf16", "LocalEngine, ModelManager dtype bf16 (--dtype bf16; auto on this CPU)"
                               if native_bf16() else "LocalEngine, ModelManager dtype bf16 (--dtype bf16)",
                               LocalEngine(bf16_models), args))
    if "openvino" in wanted:
        rows.append(openvino_row(bf16_models, args))

    print(f"{args.size}x{args.size}, {args.steps} steps, CFG {CFG}, Euler, {torch.get_num_threads()} torch "
          f"thread(s), {os.cpu_count()} CPUs, native bf16: {native_bf16()}, {args.runs} timed run(s) per row, "
          f"interleaved\n")
    for row in rows:  # warm-up: first calls allocate, pick kernels, convert (OpenVINO) and compile
        if row.skip:
            continue
        t0 = time.perf_counter()
        runner = getattr(row, "runner", None)
        if runner is not None:
            row.run(Steps(), 1)  # starts the conversion in the background (this call runs on torch)
            runner.wait()
        row.run(Steps(), 1)
        notes = getattr(row, "last", {}).get("notes", [])
        if runner is not None and not any(n == "OpenVINO" or n.startswith("OpenVINO:") for n in notes):
            row.skip = f"did not run on OpenVINO: {'; '.join(notes)}"
        print(f"warm-up {row.name:8s} {time.perf_counter() - t0:7.1f} s" + (f"   ({'; '.join(notes)})" if notes else ""),
              flush=True)
    for i in range(args.runs):
        for row in rows:
            if not row.skip:
                row.results.append(measure(lambda ticker, row=row: row.run(ticker, args.steps)))
                r = row.results[-1]
                print(f"run {i + 1} {row.name:8s} {r['total']:7.1f} s", flush=True)

    print()
    reference = next((statistics.median(r["total"] for r in row.results) for row in rows
                      if row.name == "fp32" and row.results), None)
    print(f"{'row':9s} {'s/image':>8s} {'s/step':>7s} {'decode':>7s} {'rest':>6s} {'ratio':>6s} {'weights':>8s} "
          f"{'peak RSS':>9s} {'+call':>7s} {'img std':>7s}   what")
    for row in rows:
        if row.skip:
            print(f"{row.name:9s} skipped: {row.skip}")
            continue
        med = {k: statistics.median(r[k] for r in row.results) for k in ("total", "step", "decode", "first")}
        rest = med["total"] - args.steps * med["step"] - med["decode"]
        peak = max(r["peak"] for r in row.results) / GIB
        above = max(r["above"] for r in row.results) / GIB
        ratio = f"{med['total'] / reference:5.2f}x" if reference else "   -  "
        print(f"{row.name:9s} {med['total']:8.2f} {med['step']:7.2f} {med['decode']:7.2f} {rest:6.2f} {ratio:>6s} "
              f"{row.weights:6.2f} G {peak:7.2f} G {above:5.2f} G {row.results[-1]['std']:7.1f}   {row.what}")
    print(f"\n(s/image, s/step, decode: median of {args.runs}; rest = s/image - steps x s/step - decode: text "
          f"encoders, setup; ratio: to the fp32 engine; peak RSS: the whole process (every row's weights), +call: "
          f"above the RSS before the call; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20):.2f} G;"
          f" total {time.perf_counter() - started:.0f} s)")


# ------------------------------------------------------------------------------------------ GPU


def gpu(args) -> None:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device here (run it on a GPU machine: scripts/gpu-bench.sh)")
    dtype = torch.float16 if device == "cuda" else torch.float32
    sync = device == "cuda"
    models_dir = args.models_dir
    builders = {"sd15": (SD15_NAME, 512, write_random_sd15), "sdxl": (SDXL_NAME, 1024, write_random_sdxl)}
    specs = []
    for name in args.gpu_models.split(","):
        if name in builders:
            model, size, build = builders[name]
            t0 = time.perf_counter()
            build(models_dir, device, dtype)
            print(f"model {model} ({name} architecture, random weights) in {models_dir} "
                  f"({time.perf_counter() - t0:.0f} s to build or find)", flush=True)
        else:  # e.g. tiny-sd1 / tiny-sdxl: a quick check of this code path on a CPU
            from backends.local.tiny import write_tiny_models

            write_tiny_models(models_dir)
            model, size = name, args.size or 128
        specs.append((name, model, args.size or size))
    batches = [int(b) for b in args.batches.split(",")]
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"device {name}, {dtype}, {args.steps} steps, CFG {CFG}, Euler, batches {batches}, {args.runs} timed "
          f"run(s) each (median)", flush=True)
    print(f"\n{'model':10s} {'size':>5s} {'mode':8s} {'batch':>5s} {'it/s':>7s} {'s/batch':>8s} {'images/s':>9s} "
          f"{'s/image':>8s} {'peak mem':>9s} {'warm-up':>8s}", flush=True)
    modes = ["eager", "compile"] if args.compile else ["eager"]
    for mode in modes:  # eager first: a timeout during compilation still leaves every eager figure
        for label, model, size in specs:
            models = ModelManager(models_dir, default=model, device=device, dtype=dtype, cache_size=1)
            engine = LocalEngine(models)
            loaded = models.get(model)
            if mode == "compile":
                loaded.pipe.unet.compile()  # in place: the module (and its LoRA/config attributes) stays itself
            for batch in batches:
                spec = argparse.Namespace(**{**vars(args), "size": size, "model": model})
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                engine.generate(job(spec, args.steps, batch))  # warm-up: for compile, compiles this shape
                if sync:
                    torch.cuda.synchronize()
                warm = time.perf_counter() - t0
                results = [measure(lambda steps, b=batch, s=spec, e=engine: e.generate(job(s, args.steps, b), steps).images[0],
                                   sync=sync) for _ in range(args.runs)]
                total = statistics.median(r["total"] for r in results)
                step = statistics.median(r["step"] for r in results)
                peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                        else max(r["peak"] for r in results)) / GIB
                print(f"{label:10s} {size:5d} {mode:8s} {batch:5d} {1 / step:7.2f} {total:8.3f} {batch / total:9.2f} "
                      f"{total / batch:8.3f} {peak:7.2f} G {warm:7.1f} s", flush=True)
            del engine, loaded
            models.unload()
            del models
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            if mode == "compile":
                torch._dynamo.reset()
    print("\n(it/s: UNet steps per second of one batch (CFG doubles the UNet batch); s/batch: one engine call, "
          "text encoders and VAE decode included; peak mem: torch.cuda.max_memory_allocated)")


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA: SD1.5 512² and SDXL 1024², batch 1/4/8, eager and "
                                                       "torch.compile")
    ap.add_argument("--size", type=int, default=None, help="image side (CPU: 512; --gpu: each model's own)")
    ap.add_argument("--steps", type=int, default=None, help="CPU: 4; --gpu: 20")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per row (median); CPU: 2; --gpu: 3")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (and OpenVINO's)")
    ap.add_argument("--rows", default="bare,fp32,bf16,openvino", help="CPU rows to run")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                    help="where the random models are built once and reused")
    ap.add_argument("--batches", default="1,4,8", help="--gpu: images per engine call")
    ap.add_argument("--gpu-models", default="sd15,sdxl",
                    help="--gpu: sd15, sdxl (or tiny-sd1, tiny-sdxl for a quick check of this path on a CPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="--gpu: also time torch.compile on the UNet (after every eager row)")
    ap.add_argument("--device", default="cuda", help="--gpu: the device (cpu: check this path without a GPU)")
    args = ap.parse_args()
    args.models_dir = args.models_dir.expanduser()
    args.models_dir.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        args.steps = args.steps or 20
        args.runs = args.runs or 3
        gpu(args)
    else:
        args.size = args.size or 512
        args.steps = args.steps or 4
        args.runs = args.runs or 2
        args.model = SD15_NAME
        cpu(args)


if __name__ == "__main__":
    main()

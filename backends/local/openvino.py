"""OpenVINO for the UNet and the VAE on a CPU: `--cpu-engine openvino` or `[server] cpu_engine = "openvino"`.

What runs on OpenVINO: the UNet (every denoising step), the VAE decoder, and the VAE encoder (img2img and inpainting
start images). The text encoders, the scheduler and everything else stay on torch.

Conversion, once per model and precision: `openvino.convert_model` traces float32 copies of the UNet and the VAE
halves with every dimension left dynamic (batch, height, width, prompt length) and the IR is saved beside the models,
`<models_dir>/.openvino-cache/<sha256[:16] of the model>/<unet|vae_decoder|vae_encoder>-<f32|bf16>.xml`, where a
restart finds it. It runs on a background thread: until it is done, jobs of that model run on torch and say so.

Compilation, once per size: each part is the IR reshaped to static height, width and prompt length with a dynamic
batch dimension (CFG doubles the batch; the queue batches up to `[queue] max_batch` jobs), compiled on first use, on
the worker, timed in the job's notes; the MAX_COMPILED most recent per part stay compiled. Why a dynamic batch:
SD1.5-sized, bf16, 512², batch 2, 2 cores, a fully static UNet ran 4.36-4.45 s/step and the batch-dynamic one
4.36-4.56 s/step (no measurable gain), but each static one costs its own compile (2-11 s) and ~3.4 GiB, one per batch
size the queue happens to form. (On the tiny model static shapes were 1.1-1.4× faster: per-call overhead dominates.)

Precision: bf16 (INFERENCE_PRECISION_HINT) when the server runs in half precision and the CPU has native bf16, else
f32. A job runs on torch instead when LoRAs are active (the IR holds the plain weights), the model is still
converting or failed to, or the architecture is not a 4-channel SD1/SD2/SDXL UNet; its Result's notes say which path
ran: "OpenVINO" or "torch (OpenVINO: <reason>)". The torch pipeline is untouched: the engine swaps these modules into
the pipeline for one call (`attach`) and restores its own afterwards.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

log = logging.getLogger(__name__)

CACHE_NAME = ".openvino-cache"
PARTS = ("unet", "vae_decoder", "vae_encoder")
MAX_COMPILED = 2  # compiled sizes kept per part: each holds its own copy of the weights (SD1.5 UNet: ~3.4 GiB)
OPENVINO = "OpenVINO"


def fallback_note(reason: str) -> str:
    return f"torch ({OPENVINO}: {reason})"


# ---------------------------------------------------------------------------------------- what is traced


class _UNetGraph(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class _Decoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


class _Encoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):  # the moments (mean and log-variance) the pipeline samples from
        return self.vae.encode(image).latent_dist.parameters


def _examples(unet, vae) -> dict[str, tuple[torch.nn.Module, dict[str, torch.Tensor]]]:
    """Small example inputs to trace with: every dimension of the IR stays dynamic."""
    unet_in = {"sample": torch.randn(2, unet.config.in_channels, 16, 16), "timestep": torch.tensor(500.0),
               "encoder_hidden_states": torch.randn(2, 77, unet.config.cross_attention_dim)}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeddings and the size/crop ids
        width = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
        unet_in.update(text_embeds=torch.randn(2, width), time_ids=torch.randn(2, 6))
    return {
        "unet": (_UNetGraph(unet), unet_in),
        "vae_decoder": (_Decoder(vae), {"latents": torch.randn(1, vae.config.latent_channels, 16, 16)}),
        "vae_encoder": (_Encoder(vae), {"image": torch.randn(1, vae.config.in_channels, 128, 128)}),
    }


def unsupported(pipe) -> str | None:
    """Why this pipeline's UNet cannot run on OpenVINO here (None: it can)."""
    config = pipe.unet.config
    if config.in_channels != 4 or config.time_cond_proj_dim is not None:
        return "only 4-channel SD1/SD2/SDXL UNets are converted"
    if config.addition_embed_type not in (None, "text_time") or getattr(pipe.unet, "encoder_hid_proj", None):
        return "this UNet's extra conditioning is not converted"
    return None


# ---------------------------------------------------------------------------------------- the converted models


@dataclass
class _Model:
    key: str
    title: str
    folder: Path
    state: str = "ready"  # "converting" | "ready" | "failed"
    reason: str = ""
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None  # how long this process took to convert it (None: found on disk)
    announced: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class OpenVinoRunner:
    """Converts, caches, compiles and runs a model's UNet and VAE on OpenVINO's CPU plugin (one per engine)."""

    def __init__(self, cache_dir: Path, dtype: torch.dtype = torch.float32, threads: int | None = None):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        native_bf16 = "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if native_bf16 and dtype != torch.float32 else "f32"
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self.cache_dir = Path(cache_dir)
        self.conversions = 0  # models converted by this process (a restart on a warm cache converts none)
        self.compiles = 0
        self._models: dict[str, _Model] = {}
        self._compiled: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ per pipeline call

    def attach(self, loaded, pipe, loras) -> "Attachment":
        """The OpenVINO modules for one call of `pipe` (the job's LoRAs already applied), or why it runs on torch."""
        reason = unsupported(pipe)
        if reason is None and loras:
            reason = f"LoRA {', '.join(lora.name for lora in loras)} active; the converted model has no LoRAs"
        if reason is not None:
            return Attachment(self, None, reason)
        model = self._model(loaded, pipe)
        if model.state == "converting":
            reason = f"converting {model.title} in the background, {time.perf_counter() - model.started:.0f} s so far"
        elif model.state == "failed":
            reason = f"converting {model.title} failed: {model.reason}"
        return Attachment(self, model if reason is None else None, reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every conversion under way (tests, benchmarks); False on timeout."""
        with self._lock:
            pending = [m.done for m in self._models.values()]
        deadline = None if timeout is None else time.monotonic() + timeout
        return all(done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())) for done in pending)

    # ------------------------------------------------------------------------------------ conversion

    def _model(self, loaded, pipe) -> _Model:
        info = loaded.info
        key = (info.sha256 or "")[:16] or "repo-" + hashlib.sha256(info.source.encode()).hexdigest()[:12]
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                return model
            model = _Model(key, info.title, self.cache_dir / key)
            self._models[key] = model
            if all(self._xml(model, part).is_file() and self._xml(model, part).with_suffix(".bin").is_file()
                   for part in PARTS):
                log.info("%s: %s found converted in %s", OPENVINO, info.title, model.folder)
                model.done.set()
                return model
            model.state = "converting"
        try:  # float32 copies, taken here on the worker thread: it may load LoRAs into the live modules meanwhile
            unet, vae = copy.deepcopy(pipe.unet).float().eval(), copy.deepcopy(pipe.vae).float().eval()
        except Exception as error:  # out of memory, most likely: this model stays on torch
            log.exception("%s: copying %s to convert it failed", OPENVINO, info.title)
            model.state, model.reason = "failed", _first_line(error)
            model.done.set()
            return model
        log.info("%s: converting %s (UNet, VAE) in the background to %s; its jobs run on torch until then",
                 OPENVINO, info.title, model.folder)
        threading.Thread(target=self._convert, args=(model, unet, vae), name="openvino-convert", daemon=True).start()
        return model

    def _convert(self, model: _Model, unet, vae) -> None:
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                for part, (module, example) in _examples(unet, vae).items():
                    converted = self.ov.convert_model(module, example_input=example)
                    self._save(converted, self._xml(model, part))
                    del converted
            model.seconds = time.perf_counter() - t0
            model.state = "ready"
            self.conversions += 1
            log.info("%s: converted %s in %.1f s", OPENVINO, model.title, model.seconds)
        except Exception as error:  # the model stays on torch; the jobs' notes say why
            log.exception("%s: converting %s failed", OPENVINO, model.title)
            model.reason = _first_line(error)
            model.state = "failed"
        finally:
            del unet, vae
            model.done.set()

    def _xml(self, model: _Model, part: str) -> Path:
        return model.folder / f"{part}-{self.precision}.xml"

    def _save(self, converted, xml: Path) -> None:
        """Save beside the cache, then move in: the .xml (moved last) is only ever there with its whole .bin."""
        staging = xml.parent / f".tmp-{os.getpid()}-{xml.stem}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            self.ov.save_model(converted, str(staging / xml.name), compress_to_fp16=self.precision != "f32")
            os.replace(staging / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
            os.replace(staging / xml.name, xml)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ------------------------------------------------------------------------------------ compiled buckets

    def compiled(self, model: _Model, part: str, shapes: dict[str, tuple[int, ...]]) -> tuple[object, float | None]:
        """The compiled `part` for these input shapes (any batch size), and the seconds it took to compile
        (None: it was compiled already)."""
        shapes = {name: (-1, *shape[1:]) if shape else shape for name, shape in shapes.items()}
        key = (model.key, part, tuple(sorted(shapes.items())))
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key], None
        t0 = time.perf_counter()
        ir = self.core.read_model(str(self._xml(model, part)))
        ir.reshape({name: self.ov.PartialShape(list(shape)) for name, shape in shapes.items()})
        compiled = self.core.compile_model(ir, "CPU", self.config)
        seconds = time.perf_counter() - t0
        with self._lock:
            self._compiled[key] = compiled
            self.compiles += 1
            same_part = [k for k in self._compiled if k[1] == part]
            for old in same_part[: max(0, len(same_part) - MAX_COMPILED)]:
                del self._compiled[old]
        sizes = ", ".join(f"{k} {'x'.join(str(d) if d > 0 else 'N' for d in v)}" for k, v in shapes.items() if v)
        log.info("%s: compiled %s of %s for %s in %.1f s (%s)", OPENVINO, part, model.title, sizes, seconds,
                 self.precision)
        return compiled, seconds


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).contiguous().numpy()


class Attachment:
    """One pipeline call's OpenVINO modules: `with attachment.applied(pipe): pipe(...)`, then `notes`."""

    def __init__(self, runner: OpenVinoRunner, model: _Model | None, reason: str | None):
        self.runner = runner
        self.model = model
        self.reason = reason
        self.fallbacks: dict[str, str] = {}  # parts that ran on torch in this call after all, and why
        self.compiled: dict[str, float] = {}  # parts compiled for this call's shapes, and the seconds it took

    @property
    def active(self) -> bool:
        return self.model is not None

    def applied(self, pipe):
        return _Swap(self, pipe)

    def run(self, part: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """`part` on OpenVINO (float32 out), or None after recording why it could not run."""
        try:
            arrays = {k: _numpy(v) for k, v in inputs.items()}
            compiled, seconds = self.runner.compiled(self.model, part, {k: a.shape for k, a in arrays.items()})
        except Exception as error:  # a shape the plugin refuses, a damaged cache file: this call stays on torch
            log.warning("%s: %s of %s failed to compile", OPENVINO, part, self.model.title, exc_info=True)
            self.fallbacks.setdefault(part, _first_line(error))
            return None
        if seconds is not None:
            self.compiled[part] = self.compiled.get(part, 0.0) + seconds
        return torch.from_numpy(compiled(arrays, share_inputs=True)[0].copy())

    @property
    def notes(self) -> list[str]:
        if self.model is None:
            return [fallback_note(self.reason)]
        done = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in self.compiled.items())
        compiled = [f"{OPENVINO}: compiled for this size: {done}"] if done else []
        torch_parts = [f"{part}: {why}" for part, why in self.fallbacks.items()]
        if "unet" in self.fallbacks:
            return [fallback_note("; ".join(torch_parts)), *compiled]
        notes = [OPENVINO, *compiled, *(f"{OPENVINO}: on torch: {what}" for what in torch_parts)]
        if self.model.seconds is not None and not self.model.announced:
            self.model.announced = True  # the first job on OpenVINO tells of the conversion it waited for
            notes.append(f"{OPENVINO}: {self.model.title} was converted in {self.model.seconds:.0f} s")
        return notes


class _Proxy:
    """Stands in for a pipeline's torch module: everything but the overridden calls is the module's own."""

    def __init__(self, module, attachment: Attachment):
        self._module = module
        self._attachment = attachment

    def __getattr__(self, name):
        return getattr(self._module, name)


class _UNetProxy(_Proxy):
    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, return_dict=True, **kwargs):
        added = kwargs.pop("added_cond_kwargs", None) or {}
        extra = [k for k, v in kwargs.items() if not (v is None or (isinstance(v, dict) and not v))]
        steps = torch.as_tensor(timestep).reshape(-1)
        out = None
        if args or extra or set(added) - {"text_embeds", "time_ids"}:
            self._attachment.fallbacks.setdefault("unet", f"unsupported arguments {sorted(extra) or len(args)}")
        elif not steps.numel() or not bool((steps == steps[0]).all()):
            self._attachment.fallbacks.setdefault("unet", "one timestep per image")
        else:
            inputs = {"sample": sample, "timestep": steps[0].to(torch.float32),
                      "encoder_hidden_states": encoder_hidden_states, **added}
            out = self._attachment.run("unet", inputs)
        if out is None:
            return self._module(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict,
                                added_cond_kwargs=added or None, **kwargs)
        out = out.to(sample.dtype)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


class _VaeProxy(_Proxy):
    def decode(self, z, return_dict=True, generator=None):
        out = self._attachment.run("vae_decoder", {"latents": z})
        if out is None:
            return self._module.decode(z, return_dict=return_dict, generator=generator)
        out = out.to(z.dtype)
        return DecoderOutput(sample=out) if return_dict else (out,)

    def encode(self, x, return_dict=True):
        moments = self._attachment.run("vae_encoder", {"image": x})
        if moments is None:
            return self._module.encode(x, return_dict=return_dict)
        dist = DiagonalGaussianDistribution(moments.to(x.dtype))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)


class _Swap:
    """The pipeline's `unet` and `vae` replaced by proxies for one call, its own modules put back after."""

    def __init__(self, attachment: Attachment, pipe):
        self.attachment, self.pipe, self.saved = attachment, pipe, {}

    def __enter__(self):
        if self.attachment.active:
            attrs = vars(self.pipe)  # not setattr: DiffusionPipeline.__setattr__ would rewrite its config
            self.saved = {"unet": attrs["unet"], "vae": attrs["vae"]}
            attrs["unet"] = _UNetProxy(self.saved["unet"], self.attachment)
            attrs["vae"] = _VaeProxy(self.saved["vae"], self.attachment)
        return self.attachment

    def __exit__(self, *exc):
        vars(self.pipe).update(self.saved)
        return False

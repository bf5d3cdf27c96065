"""The VAE a job decodes (and, for image-to-image, encodes) with: `Job.vae`, A1111's `sd_vae`
(docs/reference/a1111_features.md §6).

* `None`, "" or "None": the model's own VAE (the feature is off).
* "Automatic": a listed VAE named `<checkpoint stem>.vae.safetensors|.vae.pt|.vae.ckpt`, the one beside the
  checkpoint first, then one in models/VAE/; else the model's own. Only listed places are looked in (as A1111's
  checkpoint dirs): for a checkpoint outside models/Stable-diffusion/, put its VAE in models/VAE/.
* Any other value: a VAE listed by `list_vaes` (models/VAE/**: `.safetensors`, `.pt`, `.ckpt` files and diffusers
  folders; `*.vae.*` files among the checkpoints), by name with or without its extension (case-insensitive), an
  absolute path of a diffusers VAE folder, or a Hugging Face Hub repo id (from the local cache, or downloaded when
  online). Anything else is an InvalidRequest listing the VAEs there are.

Single files are A1111/LDM state dicts (optionally under `state_dict`, keys `encoder.*`/`decoder.*` or a whole
checkpoint's `first_stage_model.*`); they load offline with `AutoencoderKL.from_single_file`, given the loaded
model's own VAE config (the architecture a replacement must have, tiny test models included). A few loaded VAEs
are kept (`CACHE_SIZE`) on the model's device and dtype. The chosen VAE is swapped into the model's pipelines for
the call only: the UNet and text encoders are never reloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.utils.torch_utils import get_module_execution_device
from safetensors.torch import load_file

from ...job import InvalidRequest, Job, ModelUnavailable
from ..models import DTYPE_ARG, _first_line, _hub_offline
from .base import Feature

log = logging.getLogger(__name__)

VAE_DIR = "VAE"
CHECKPOINT_DIR = "Stable-diffusion"
FILE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
AUTO_SUFFIXES = tuple(f".vae{s}" for s in FILE_SUFFIXES)  # `<checkpoint stem>.vae.pt`, as A1111 names them
AUTOMATIC = "automatic"
OFF = {"", "none"}
CACHE_SIZE = 2
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_LDM_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class VaeEntry:
    name: str  # the file name with its extension, or the folder name (A1111's `model_name`)
    path: Path

    @property
    def automatic_for(self) -> str | None:
        """The checkpoint stem this VAE is the Automatic choice of ("model" for model.vae.pt), else None."""
        lower = self.name.lower()
        suffix = next((s for s in AUTO_SUFFIXES if lower.endswith(s)), None)
        return self.name[: -len(suffix)].lower() if suffix and self.path.is_file() else None


@dataclass(frozen=True)
class VaeSource:
    kind: str  # "file" | "folder" | "repo"
    location: str  # a path, or a hub repo id
    name: str


def list_vaes(models_dir: Path) -> list[VaeEntry]:
    """The VAEs a job can name (for `/sdapi/v1/sd-vae`: model_name = name, filename = path): models/VAE/ first,
    then the `*.vae.*` files among the checkpoints; on a name met twice, the first one wins."""
    models_dir = Path(models_dir)
    found = _walk(models_dir / VAE_DIR, lambda f: f.lower().endswith(FILE_SUFFIXES), folders=True)
    found += _walk(models_dir / CHECKPOINT_DIR, lambda f: f.lower().endswith(AUTO_SUFFIXES), folders=False)
    entries: dict[str, VaeEntry] = {}
    for path in found:
        entries.setdefault(path.name, VaeEntry(path.name, path))
    return list(entries.values())


def _walk(top: Path, wanted, folders: bool) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(top):
        root_path = Path(root)
        if folders and root_path != top and _is_vae_folder(root_path):
            found.append(root_path)
            dirs.clear()  # a diffusers folder's own weight files are not VAEs of their own
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden: partial writes, caches
        for name in sorted(files):
            if wanted(name) and not name.startswith(".") and (root_path / name).stat().st_size > 0:
                found.append(root_path / name)
    return found


def _is_vae_folder(path: Path) -> bool:
    # a VAE saved alone (config.json + weights), or a whole diffusers pipeline folder whose vae/ is taken
    return (path / "config.json").is_file() or ((path / "model_index.json").is_file() and (path / "vae").is_dir())


def _choice(value: str | None) -> str | None:
    """None when the job keeps the model's own VAE, AUTOMATIC, or the name as given."""
    if value is None or value.strip().lower() in OFF:
        return None
    return AUTOMATIC if value.strip().lower() == AUTOMATIC else value.strip()


def resolve_vae(name: str, models_dir: Path) -> VaeSource:
    """The VAE an explicit `Job.vae` names; InvalidRequest when there is none by that name."""
    entries = list_vaes(models_dir)
    for same in (str.__eq__, lambda a, b: a.casefold() == b.casefold()):
        for entry in entries:
            stem = entry.name.rsplit(".", 1)[0] if entry.path.is_file() else entry.name
            if same(entry.name, name) or same(stem, name) or same(str(entry.path), name):
                return _source_of(entry.path, entry.name)
    path = Path(name).expanduser()
    if path.is_absolute() and path.is_dir() and _is_vae_folder(path):
        return VaeSource("folder", str(path), path.name)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.lower().endswith(FILE_SUFFIXES):
        if _hub_offline() and not _cached_on_hub(name):
            raise InvalidRequest(
                f"VAE {name!r} is a Hugging Face Hub repo id, which cannot be downloaded offline (HF_HUB_OFFLINE is "
                f"set); put the VAE in {Path(models_dir) / VAE_DIR}", details={"vae": name})
        return VaeSource("repo", name, name)
    names = [e.name for e in entries]
    raise InvalidRequest(
        f"VAE {name!r} not found; available: {', '.join(names) or 'none'} (or \"Automatic\", \"None\"); VAE files "
        f"({', '.join(FILE_SUFFIXES)}) and diffusers VAE folders go in {Path(models_dir) / VAE_DIR}",
        details={"vae": name, "available": names})


def automatic_vae(checkpoint: str, models_dir: Path) -> VaeSource | None:
    """A1111's "Automatic": the VAE named after the checkpoint, the one beside it first; None: the model's own."""
    path = Path(checkpoint)
    stem = (path.name.rsplit(".", 1)[0] if path.is_file() else path.name).lower()
    matches = [e for e in list_vaes(models_dir) if e.automatic_for == stem]
    matches.sort(key=lambda e: e.path.parent != path.parent)  # stable: beside the checkpoint, then listing order
    return _source_of(matches[0].path, matches[0].name) if matches else None


def _source_of(path: Path, name: str) -> VaeSource:
    return VaeSource("folder" if path.is_dir() else "file", str(path), name)


def _cached_on_hub(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("config.json", "vae/config.json"))


class Vae(Feature):
    name = "vae"
    openvino_ok = False  # the OpenVINO runner compiled the model's own VAE

    def __init__(self, setup):
        super().__init__(setup)
        self._cache: OrderedDict[tuple, AutoencoderKL] = OrderedDict()
        self._lock = threading.Lock()

    def wanted(self, job: Job) -> bool:
        choice = _choice(job.vae)
        if choice == AUTOMATIC:  # only when some VAE is named after a checkpoint: most jobs keep OpenVINO
            return any(e.automatic_for for e in list_vaes(self.setup.models_dir))
        return choice is not None

    def key(self, job: Job) -> tuple:
        choice = _choice(job.vae)
        # Automatic depends on the model only, which the engine's batch key holds already
        return (AUTOMATIC,) if choice == AUTOMATIC else (resolve_vae(choice, self.setup.models_dir).location,)

    def check(self, job: Job) -> None:
        choice = _choice(job.vae)
        if choice not in (None, AUTOMATIC):
            resolve_vae(choice, self.setup.models_dir)

    @contextlib.contextmanager
    def call(self, runs, pipe, loaded):
        choice = _choice(runs[0].job.vae)
        if choice == AUTOMATIC:
            source = automatic_vae(loaded.info.source, self.setup.models_dir)
        else:
            source = resolve_vae(choice, self.setup.models_dir)
        if source is None:
            yield
            return
        original = loaded.pipe.vae
        vae = self._load(source, original)
        for run in runs:  # A1111's infotext names a VAE other than the baked-in one: `VAE hash` (files only), `VAE`
            if source.kind == "file":
                run.params["VAE hash"] = self.setup.sha256(Path(source.location))[:10]
            run.params["VAE"] = source.name
        before = {id(p): p.vae for p in _pipelines(pipe, loaded)}
        try:
            for p in _pipelines(pipe, loaded):
                p.vae = vae
            yield
        finally:
            # also pipelines made during the call (a hires pass's first img2img variant copies the swapped VAE)
            for p in _pipelines(pipe, loaded):
                if p.vae is vae:
                    p.vae = before.get(id(p), original)

    def _load(self, source: VaeSource, original: AutoencoderKL) -> AutoencoderKL:
        device, dtype = get_module_execution_device(original), original.dtype
        config = json.dumps(dict(original.config), sort_keys=True, default=str)
        stamp = os.stat(source.location).st_mtime_ns if source.kind != "repo" else None
        key = (source.kind, source.location, stamp, hashlib.sha256(config.encode()).hexdigest(), str(device), dtype)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            vae = _read(source, original, dtype)
        except (InvalidRequest, ModelUnavailable):
            raise
        except Exception as error:  # the caller gets one line; the log gets the traceback
            log.exception("loading VAE %s failed", source.location)
            raise ModelUnavailable(f"could not load VAE {source.name}: {_first_line(error)}") from error
        _check_fits(vae, original, source)
        vae = vae.to(device).eval()
        with self._lock:
            self._cache[key] = vae
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return vae


def _pipelines(pipe, loaded) -> list:
    """The call's pipeline and every pipeline sharing the model's weights, each once."""
    found = {}
    for p in (pipe, loaded.pipe, *loaded.variants.values()):
        found.setdefault(id(p), p)
    return [p for p in found.values() if hasattr(p, "vae")]


def _read(source: VaeSource, original: AutoencoderKL, dtype: torch.dtype) -> AutoencoderKL:
    kwargs = {DTYPE_ARG: dtype}
    if source.kind == "file":
        state = _ldm_state(Path(source.location))
        with tempfile.TemporaryDirectory() as config_dir:  # from_single_file wants a config folder
            original.save_config(config_dir)
            return AutoencoderKL.from_single_file(state, config=config_dir, local_files_only=True, **kwargs)
    location = Path(source.location)
    if source.kind == "folder":
        subfolder = None if (location / "config.json").is_file() else "vae"
        return AutoencoderKL.from_pretrained(location, subfolder=subfolder, local_files_only=True, **kwargs)
    errors = []
    for local_only in (True, False):  # the local Hugging Face cache first; then a download, when online
        if not local_only and _hub_offline():
            break
        for subfolder in (None, "vae"):  # a VAE repo, or a whole pipeline's vae/
            try:
                return AutoencoderKL.from_pretrained(source.location, subfolder=subfolder,
                                                     local_files_only=local_only, **kwargs)
            except Exception as error:
                errors.append(error)
    raise ModelUnavailable(f"could not load VAE {source.name!r} from the Hugging Face Hub "
                           f"({_first_line(errors[-1])}); put it in models/{VAE_DIR}/")


def _ldm_state(path: Path) -> dict[str, torch.Tensor]:
    """The VAE weights of an A1111 VAE file (or of a whole checkpoint), without training leftovers (loss.*)."""
    if path.suffix.lower() == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    prefix = _LDM_PREFIX if any(k.startswith(_LDM_PREFIX) for k in state) else ""
    vae = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix) and k[len(prefix):].startswith(_VAE_PARTS) and isinstance(v, torch.Tensor)}
    if not vae:
        raise ModelUnavailable(f"{path.name} holds no VAE weights (no encoder.*/decoder.* tensors)")
    return vae


def _check_fits(vae: AutoencoderKL, original: AutoencoderKL, source: VaeSource) -> None:
    """A VAE of another latent layout would fail in the pipeline with a shape error: say so plainly."""
    mine, theirs = vae.config, original.config
    if (mine.latent_channels, len(mine.block_out_channels)) != (theirs.latent_channels,
                                                                len(theirs.block_out_channels)):
        raise InvalidRequest(
            f"VAE {source.name} does not fit this model ({mine.latent_channels} latent channels at 1/"
            f"{2 ** (len(mine.block_out_channels) - 1)} scale; the model's VAE has {theirs.latent_channels} at 1/"
            f"{2 ** (len(theirs.block_out_channels) - 1)})", details={"vae": source.name})

"""The model registry and loader.

Models live in `models_dir/Stable-diffusion/` as A1111-style single files (`.safetensors`, `.ckpt`) or diffusers
folders; the server's default model and the aliases may also name a path elsewhere or a Hugging Face Hub repo id.
Names, titles and hashes follow A1111's `/sdapi/v1/sd-models` conventions so clients can select models as they do
there.

Single files load offline: the architecture is read off the tensor shapes, and the matching weight-free config
folder from `skeletons/` (plus the shipped CLIP tokenizer) is given to `from_single_file(config=...)`, which
otherwise would fetch those configs from the hub.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoPipelineForText2Image, DiffusionPipeline
from safetensors import safe_open

from ..job import ModelInfo, ModelNotFound, ModelUnavailable

log = logging.getLogger(__name__)

SKELETONS_DIR = Path(__file__).parent / "skeletons"
TOKENIZER_DIR = SKELETONS_DIR / "clip-tokenizer"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
HASH_CACHE_NAME = ".sdgate-hashes.json"
CONFIG_CACHE_NAME = ".sdgate-configs"
HOW_TO_PROVIDE = "drop a .safetensors checkpoint into {checkpoints} or pass --model PATH"
# diffusers renamed from_pretrained's torch_dtype to dtype in 0.42 (huggingface/diffusers#14205); older ones lack it
DTYPE_ARG = "dtype" if hasattr(diffusers.utils.deprecation_utils, "_resolve_dtype") else "torch_dtype"


@dataclass(frozen=True)
class Signature:
    """A tensor only one architecture has, and its width there."""

    key: str
    width: int
    family: str
    skeleton: str


# Checked in order; the first whose tensor is present with this last dimension wins.
SIGNATURES = (
    Signature("conditioner.embedders.1.model.positional_embedding", 1280, "sdxl", "sdxl"),
    Signature("conditioner.embedders.1.model.positional_embedding", 64, "sdxl", "tiny-sdxl"),
    Signature("cond_stage_model.model.token_embedding.weight", 1024, "sd2", "sd21"),
    Signature("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", 768, "sd1", "sd15"),
    Signature("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", 32, "sd1", "tiny-sd1"),
)
SUPPORTED_ARCHITECTURES = "SD 1.x, SD 2.x and SDXL base text-to-image checkpoints"
_UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"  # its in-channels: 4 for text-to-image


@dataclass
class LoadedModel:
    pipe: DiffusionPipeline
    info: ModelInfo
    family: str  # "sd1" | "sd2" | "sdxl"
    # the scheduler the model came with; the engine swaps pipe.scheduler per request and builds from this one
    base_scheduler: object = None
    # pipelines sharing these weights (e.g. "img2img" via from_pipe), dropped together with the model
    variants: dict[str, DiffusionPipeline] = field(default_factory=dict)

    def __post_init__(self):
        if self.base_scheduler is None:
            self.base_scheduler = self.pipe.scheduler


def family_of(pipe: DiffusionPipeline) -> str:
    if "text_encoder_2" in pipe.components:
        return "sdxl"
    return _family(pipe.__class__.__name__, pipe.unet.config.cross_attention_dim)


def _family(pipeline_class: str, cross_attention_dim) -> str:
    if "XL" in pipeline_class:
        return "sdxl"
    return "sd2" if cross_attention_dim == 1024 else "sd1"  # SD2's OpenCLIP-H is 1024 wide, SD1's CLIP-L 768


def detect_architecture(path: Path) -> Signature:
    """Which architecture a single-file checkpoint holds, from its tensor names and shapes (no weights read)."""
    return architecture_of(_tensor_shapes(path), Path(path).name)


def architecture_of(shapes: dict[str, tuple[int, ...]], name: str = "the checkpoint") -> Signature:
    in_channels = shapes.get(_UNET_INPUT, (0, 4))[1]
    if in_channels != 4:
        raise ModelUnavailable(
            f"{name} has a UNet with {in_channels} input channels (an inpainting or other special model); "
            f"only {SUPPORTED_ARCHITECTURES} are supported"
        )
    for signature in SIGNATURES:
        shape = shapes.get(signature.key)
        if shape and shape[-1] == signature.width:
            return signature
    raise ModelUnavailable(f"{name} is not a checkpoint this server knows; supported: {SUPPORTED_ARCHITECTURES}")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    return {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}


class ModelManager:
    """Lists, resolves and loads models; keeps the most recently used pipelines loaded (LRU of `cache_size`)."""

    def __init__(
        self,
        models_dir: Path,
        default: str | None = None,
        aliases: dict[str, str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = 2,
        cpu_offload: bool = False,
        compile: bool = False,
    ):
        self.models_dir = Path(models_dir)
        self.checkpoints_dir = self.models_dir / "Stable-diffusion"
        self.default = default
        self.aliases = dict(aliases or {})
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache_size = max(1, cache_size)
        self.cpu_offload = cpu_offload
        self.compile = compile
        self._models: list[ModelInfo] | None = None
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loads: Counter[str] = Counter()  # model name → times loaded (a Ray replica reports it: cluster/)
        self._hashes = _HashCache(self.models_dir / HASH_CACHE_NAME)
        self._lock = threading.RLock()  # the listing, the hash cache and the pipeline cache
        self._load_lock = threading.Lock()  # one load at a time; listing stays answerable meanwhile

    # ------------------------------------------------------------------------------------------ listing

    def list(self) -> list[ModelInfo]:
        with self._lock:
            if self._models is None:
                self._models = self._scan()
            return list(self._models)

    def refresh(self) -> list[ModelInfo]:
        with self._lock:
            self._models = None
            return self.list()

    def _scan(self) -> list[ModelInfo]:
        models = [self._local_info(path, path.relative_to(self.checkpoints_dir)) for path in self._checkpoint_paths()]
        known = {Path(m.source).resolve() for m in models}
        for target in [self.default, *self.aliases.values()]:
            if not target or any(_matches(m, target) for m in models):
                continue
            path = Path(target).expanduser()
            if path.exists() and _is_model_path(path) and path.resolve() not in known:
                models.append(self._local_info(path, Path(path.name)))
                known.add(path.resolve())
            elif _looks_like_repo_id(target) and not path.exists():
                if not any(m.kind == "repo" and m.source == target for m in models):
                    models.append(ModelInfo(name=target.replace("/", "_"), title=target, source=target, kind="repo"))
        self._hashes.save()
        return models

    def file_sha256(self, path: Path) -> str:
        """The sha256 of any file the engine reads (a VAE, an embedding), remembered with the checkpoints' hashes."""
        with self._lock:
            digest = self._hashes.sha256(Path(path))
            self._hashes.save()
            return digest

    def _checkpoint_paths(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.checkpoints_dir):
            root_path = Path(root)
            if "model_index.json" in files and root_path != self.checkpoints_dir:
                found.append(root_path)
                dirs.clear()  # a diffusers folder's own weight files are not checkpoints
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden: partial writes
            found += [root_path / f for f in files if f.endswith(CHECKPOINT_SUFFIXES) and not f.startswith(".")]
        return sorted(found, key=lambda p: p.relative_to(self.checkpoints_dir).as_posix())

    def _local_info(self, path: Path, relative: Path) -> ModelInfo:
        sha256 = self._hashes.sha256(path)
        rel = relative.as_posix()
        kind = "folder" if path.is_dir() else "single_file"
        return ModelInfo(
            name=(rel if kind == "folder" else rel.rsplit(".", 1)[0]).replace("/", "_").replace("\\", "_"),
            title=f"{rel} [{sha256[:10]}]",
            source=str(path),
            kind=kind,
            hash=sha256[:10],
            sha256=sha256,
            family=_family_on_disk(path),
            demo=path.name.startswith("tiny-") and self.checkpoints_dir in path.parents,
        )

    # ------------------------------------------------------------------------------------------ resolving

    def resolve(self, name: str | None) -> ModelInfo:
        """The model `name` means, in any form A1111 accepts (title, name, file name, short hash, sha256...)."""
        with self._lock:
            if name is None or name == "":
                return self._resolve_default()
            seen = set()
            while name in self.aliases and name not in seen:  # aliases may chain; a loop ends at its start
                seen.add(name)
                name = self.aliases[name]
            for rescan in (False, True):  # a file dropped in since the last scan is found without a refresh
                models = self.refresh() if rescan else self.list()
                found = _find(models, name)
                if found:
                    return found
            by_path = _find_by_path(models, name)
            if by_path:
                return by_path
            titles = [m.title for m in models]
            raise ModelNotFound(
                f"model {name!r} not found; available: {', '.join(titles) or 'none'}",
                details={"model": name, "available": titles},
            )

    def _resolve_default(self) -> ModelInfo:
        if self.default:
            return self.resolve(self.default)
        models = self.list()
        if not models:
            raise ModelNotFound(
                "no models available: " + HOW_TO_PROVIDE.format(checkpoints=self.checkpoints_dir),
                details={"available": []},
            )
        return models[0]

    # ------------------------------------------------------------------------------------------ loading

    def get(self, name: str | None = None) -> LoadedModel:
        """The loaded pipeline for `name`; loads it (evicting the least recently used) unless it is cached."""
        with self._load_lock:
            info = self.resolve(name)
            with self._lock:
                if info.source in self._cache:
                    self._cache.move_to_end(info.source)
                    return self._cache[info.source]
                while len(self._cache) >= self.cache_size:  # free memory before loading the next one
                    self._drop(next(iter(self._cache)))
            t0 = time.perf_counter()
            pipe = self._load(info)
            self.loads[info.name] += 1
            log.info("loaded model %s in %.1f s (load %d of it here)", info.name, time.perf_counter() - t0,
                     self.loads[info.name])
            family = family_of(pipe)
            with self._lock:
                if info.family != family:  # e.g. a .ckpt, whose family is known only once loaded
                    info = replace(info, family=family)
                    self._models = [info if m.source == info.source else m for m in self._models or []]
                loaded = LoadedModel(pipe=pipe, info=info, family=family)
                self._cache[info.source] = loaded
                return loaded

    def loaded(self) -> list[str]:
        """Titles of the loaded models, least recently used first."""
        with self._lock:
            return [m.info.title for m in self._cache.values()]

    def unload(self, name: str | None = None) -> None:
        """Drop one model (or, with no name, every model) from memory."""
        with self._lock:
            sources = list(self._cache) if name is None else [self.resolve(name).source]
            for source in sources:
                self._drop(source)

    def _drop(self, source: str) -> None:
        if self._cache.pop(source, None) is not None:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _load(self, info: ModelInfo) -> DiffusionPipeline:
        loaders = {"folder": self._load_folder, "single_file": self._load_single_file, "repo": self._load_repo}
        try:
            with quiet_progress():
                return self._place(loaders[info.kind](info.source))
        except ModelUnavailable:
            raise
        except Exception as error:  # callers get one clear line; the log gets the traceback
            log.exception("loading %s failed", info.source)
            raise ModelUnavailable(f"could not load {info.title}: {_first_line(error)}") from error

    def _load_folder(self, folder: str) -> DiffusionPipeline:
        return AutoPipelineForText2Image.from_pretrained(folder, local_files_only=True, **{DTYPE_ARG: self.dtype})

    def _load_single_file(self, source: str) -> DiffusionPipeline:
        path = Path(source)
        signature = detect_architecture(path)
        config_dir = self._config_dir(signature.skeleton)
        pipeline_class = getattr(diffusers, _read_json(config_dir / "model_index.json")["_class_name"])
        kwargs = {}
        prediction_type = _prediction_type_from_yaml(path)
        if prediction_type:  # A1111 convention: a .yaml beside the file says "v" for v-prediction models
            scheduler_config = _read_json(config_dir / "scheduler" / "scheduler_config.json")
            scheduler_class = getattr(diffusers, scheduler_config["_class_name"])
            kwargs["scheduler"] = scheduler_class.from_config(scheduler_config, prediction_type=prediction_type)
        return pipeline_class.from_single_file(
            str(path), config=str(config_dir), local_files_only=True, **{DTYPE_ARG: self.dtype}, **kwargs
        )

    def _load_repo(self, repo_id: str) -> DiffusionPipeline:
        hint = HOW_TO_PROVIDE.format(checkpoints=self.checkpoints_dir)
        try:  # a repo downloaded before loads from the local Hugging Face cache
            return AutoPipelineForText2Image.from_pretrained(repo_id, local_files_only=True, **{DTYPE_ARG: self.dtype})
        except Exception:
            if _hub_offline():
                raise ModelUnavailable(
                    f"{repo_id!r} is a Hugging Face Hub repo id, which cannot be downloaded offline "
                    f"(HF_HUB_OFFLINE is set); {hint}"
                ) from None
        try:
            return AutoPipelineForText2Image.from_pretrained(repo_id, **{DTYPE_ARG: self.dtype})
        except Exception as error:
            log.exception("downloading %s failed", repo_id)
            raise ModelUnavailable(
                f"could not download {repo_id!r} from the Hugging Face Hub ({_first_line(error)}); {hint}"
            ) from error

    def _place(self, pipe: DiffusionPipeline) -> DiffusionPipeline:
        # enable_model_cpu_offload raises without an accelerator, so only offload when there is one
        if self.cpu_offload and self.device.type != "cpu" and torch.cuda.is_available():
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        if self.compile and self.device.type == "cuda":
            # compiled lazily: the first job of each size bucket pays the warm-up (logged by torch), later ones run
            # the compiled graph; on a CPU the OpenVINO path (cpu_engine) is the faster route
            pipe.unet.compile()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _config_dir(self, skeleton: str) -> Path:
        """A usable config folder for `skeleton`: its JSON files plus the CLIP tokenizer files, in the models dir.

        The folder name carries a digest of the skeleton, so an upgraded skeleton never meets a stale copy.
        """
        source = SKELETONS_DIR / skeleton
        files = sorted(p for p in source.rglob("*.json"))
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:10]
        target = self.models_dir / CONFIG_CACHE_NAME / f"{skeleton}-{digest}"
        if target.is_dir():
            return target
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        for tokenizer_dir in staging.glob("tokenizer*"):
            for vocab_file in ("vocab.json", "merges.txt"):
                shutil.copyfile(TOKENIZER_DIR / vocab_file, tokenizer_dir / vocab_file)
        try:
            os.replace(staging, target)
        except OSError:  # another process assembled it first
            shutil.rmtree(staging, ignore_errors=True)
        return target


# ---------------------------------------------------------------------------------------- name matching


def _alias_forms(info: ModelInfo) -> list[str]:
    """Every string A1111 accepts for a checkpoint (`sd_models.CheckpointInfo.ids`)."""
    title_path = info.title.rsplit(" [", 1)[0] if info.hash else info.title
    basename = Path(title_path).name
    stem = Path(basename).stem if info.kind == "single_file" else basename
    forms = [info.title, title_path, info.name, basename, stem, info.source]
    if info.hash:
        forms += [info.hash, info.sha256, f"{info.name} [{info.hash}]"]
    return [f for f in forms if f]


def _find(models: list[ModelInfo], name: str) -> ModelInfo | None:
    wanted = name.strip()
    for equal in (str.__eq__, lambda a, b: a.casefold() == b.casefold()):
        for model in models:  # earlier models win, as the list is sorted: "x" is the folder x before x.safetensors
            if any(equal(form, wanted) for form in _alias_forms(model)):
                return model
    # "name [hash]" with a hash that changed (or an old title): fall back to the hash, then to the name alone
    match = re.fullmatch(r"(.+?)\s*\[([0-9a-fA-F]{8,64})\]", wanted)
    if match:
        return _find(models, match.group(2)) or _find(models, match.group(1))
    return None


def _find_by_path(models: list[ModelInfo], name: str) -> ModelInfo | None:
    """A listed model named by its path in another spelling (relative, with ~); unlisted paths are not loaded."""
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, ValueError):
        return None
    return next((m for m in models if m.kind != "repo" and Path(m.source).resolve() == path), None)


def _matches(info: ModelInfo, name: str) -> bool:
    return _find([info], name) is not None


def _looks_like_repo_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.endswith(CHECKPOINT_SUFFIXES)


def _is_model_path(path: Path) -> bool:
    return (path.is_dir() and (path / "model_index.json").is_file()) or path.suffix in CHECKPOINT_SUFFIXES


def _family_on_disk(path: Path) -> str | None:
    """The family without loading weights: from a folder's configs or a safetensors header (None for .ckpt)."""
    try:
        if path.is_dir():
            index = _read_json(path / "model_index.json")
            unet = _read_json(path / "unet" / "config.json")
            return _family(index.get("_class_name", ""), unet.get("cross_attention_dim"))
        if path.suffix == ".safetensors":
            return detect_architecture(path).family
    except Exception:  # an unknown or broken file is listed anyway; loading it reports why it fails
        return None
    return None


def _prediction_type_from_yaml(path: Path) -> str | None:
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    text = yaml_path.read_text(errors="replace")
    return "v_prediction" if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.M) else "epsilon"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


@contextmanager
def quiet_progress():
    """No tqdm bars from diffusers/transformers while loading (they would flood a server's log)."""
    libraries = [diffusers.utils.logging, transformers.utils.logging]
    were_enabled = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, enabled in zip(libraries, were_enabled, strict=True):
            if enabled:
                lib.enable_progress_bar()


# ---------------------------------------------------------------------------------------- hashing


class _HashCache:
    """sha256 of model files, remembered per path with its size and mtime (real checkpoints are GBs)."""

    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, dict] | None = None
        self._dirty = False

    def sha256(self, model_path: Path) -> str:
        files = _weight_files(model_path)
        stamp = [[f.relative_to(model_path).as_posix() if model_path.is_dir() else "", *_stat(f)] for f in files]
        key = str(model_path.resolve())
        entry = self._load().get(key)
        if entry and entry.get("stamp") == stamp:
            return entry["sha256"]
        digest = hashlib.sha256()
        for f in files:  # a folder's hash covers its weight files in sorted order
            with open(f, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
        self._entries[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
        self._dirty = True
        return digest.hexdigest()

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            staging.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            os.replace(staging, self.path)
            self._dirty = False
        except OSError as error:  # a read-only models dir only costs rehashing next time
            log.warning("could not save model hashes to %s: %s", self.path, error)

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._entries = {}
        return self._entries


def _weight_files(model_path: Path) -> list[Path]:
    if not model_path.is_dir():
        return [model_path]
    return sorted(
        (p for p in model_path.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt") and p.is_file()),
        key=lambda p: p.relative_to(model_path).as_posix(),
    )


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]

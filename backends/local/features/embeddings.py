"""Textual-inversion embeddings from `<models_dir>/embeddings/` (recursive), as A1111 uses them
(docs/reference/a1111_features.md §7).

Files: A1111 `.pt`/`.bin` (`string_to_param: {"*": (n, dim)}`, with `step`, `sd_checkpoint`, ...), `.safetensors`
with `emb_params` (n, dim), diffusers' `{token: (dim,) or (n, dim)}`, and SDXL pairs `{"clip_l": (n, 768),
"clip_g": (n, 1280)}`. An embedding's name is its file stem; on a name met twice, the first in path order wins.

Which embeddings a job uses:
* those whose name is a whole word of the prompt or the negative prompt (case-insensitive, as A1111);
* those named in `Job.embeddings`, which must exist (else InvalidRequest listing them). One named there that neither
  prompt contains is appended to the prompt as ", <name>" (just "<name>" for an empty prompt), so it acts where a
  word of the prompt would, and `Result.prompt` shows the prompt it ran with.
* An embedding fits when its width is the model's text encoder's (SD1 768, SD2 1024; SDXL: clip_l and clip_g
  together, 768 + 1280). One that does not fit is skipped: not loaded (its name stays plain text), noted in
  `Result.not_applied["embeddings"]` and listed under "skipped" by `list_embeddings`.

The used embeddings are loaded into the pipeline's tokenizer(s) and text encoder(s) with diffusers'
`load_textual_inversion` (token = the name; SDXL: each encoder its own tensor) for the encoding of the job's
prompts only, then unloaded, so the next job is unaffected. A multi-vector embedding's name stands for all its
vectors (text_encoding.py expands the token).

Differences from A1111: once loaded, the tokenizer also finds a name inside a longer word; an embedding that does
not fit in what is left of a 75-token chunk is split rather than moved whole to the next; a name that is itself a
CLIP vocabulary entry cannot be an added token (diffusers refuses) and is not applied; embeddings hidden in images
(.png/.webp) are not read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ...job import InvalidRequest, Job
from ..prompt_parser import strip_extra_networks
from .base import Feature

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
SUFFIXES = (".pt", ".bin", ".safetensors")
SDXL_KEYS = ("clip_l", "clip_g")  # the tensor of text_encoder, then of text_encoder_2


@dataclass(frozen=True, eq=False)  # eq: by identity (tensors do not compare as bools)
class Embedding:
    name: str
    path: Path
    tensors: tuple[torch.Tensor, ...]  # one (n, dim) per text encoder: SD1/SD2 one, SDXL (clip_l, clip_g)
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(t.shape[-1] for t in self.tensors)

    def fits(self, widths: tuple[int, ...] | None) -> bool:
        return widths is None or self.widths == tuple(widths)

    def info(self) -> dict:
        """A1111's `/sdapi/v1/embeddings` entry (an SDXL pair: the widths summed, clip_g's vector count)."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint, "sd_checkpoint_name": self.sd_checkpoint_name,
                "shape": sum(self.widths), "vectors": self.tensors[-1].shape[0]}


def read_embedding(path: Path) -> Embedding:
    """One embedding file; ValueError when it is none of the known layouts."""
    if path.suffix.lower() == ".safetensors":
        data = load_file(str(path))
    else:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    meta = {}
    if isinstance(data, dict) and "string_to_param" in data:  # A1111
        meta = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}
        data = dict(data["string_to_param"])
    if not isinstance(data, dict):
        raise ValueError("not a dict of tensors")
    if set(SDXL_KEYS) <= set(data):
        tensors = tuple(_matrix(data[k]) for k in SDXL_KEYS)
        if tensors[0].shape[0] != tensors[1].shape[0]:  # one token per vector must mean the same in both
            raise ValueError(f"clip_l has {tensors[0].shape[0]} vectors but clip_g {tensors[1].shape[0]}")
    else:
        found = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(found) != 1:
            raise ValueError(f"expected one tensor, found {len(found)}")
        tensors = (_matrix(found[0]),)
    step = meta.get("step")
    return Embedding(path.stem, path, tensors, step=int(step) if isinstance(step, (int, float)) else None,
                     sd_checkpoint=_text(meta.get("sd_checkpoint")),
                     sd_checkpoint_name=_text(meta.get("sd_checkpoint_name")))


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().float()
    return tensor[None] if tensor.ndim == 1 else tensor.reshape(-1, tensor.shape[-1])


def _text(value) -> str | None:
    return None if value is None else str(value)


class Library:
    """The embeddings of one models folder, read again when a file there is added, changed or removed."""

    def __init__(self, models_dir: Path):
        self.folder = Path(models_dir) / EMBEDDINGS_DIR
        self._lock = threading.Lock()
        self._stamp: list | None = None
        self._files: dict[Path, tuple] = {}  # path → (stamp, Embedding | None)
        self._entries: dict[str, Embedding] = {}
        self._pattern: re.Pattern | None = None

    def entries(self) -> dict[str, Embedding]:
        with self._lock:
            paths = self._paths()
            stamp = [(p, *_stat(p)) for p in paths]
            if stamp != self._stamp:
                self._rescan(stamp)
            return self._entries

    def lookup(self, name: str) -> Embedding | None:
        entries = self.entries()
        return entries.get(name) or next((e for n, e in entries.items() if n.casefold() == name.casefold()), None)

    def used(self, *texts: str) -> list[str]:
        """The names of the embeddings that occur as whole words in `texts` (A1111 tags like <lora:...> aside)."""
        entries = self.entries()
        if self._pattern is None:
            return []
        folded = {n.casefold(): n for n in reversed(list(entries))}  # first in path order wins
        found = []
        for text in texts:
            for match in self._pattern.finditer(strip_extra_networks(text)[0]):
                found.append(folded[match.group(0).casefold()])
        return list(dict.fromkeys(found))

    def _paths(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files)
                      if f.lower().endswith(SUFFIXES) and not f.startswith(".")]
        return found

    def _rescan(self, stamp: list) -> None:
        files, entries = {}, {}
        for path, *file_stamp in stamp:
            old = self._files.get(path)
            if old is not None and old[0] == file_stamp:
                embedding = old[1]
            elif file_stamp[0] == 0:  # zero-byte: a copy in progress (A1111 skips them too)
                embedding = None
            else:
                try:
                    embedding = read_embedding(path)
                except Exception as error:  # a broken or unknown file must not stop the others
                    log.warning("ignoring embedding %s: %s", path, error)
                    embedding = None
            files[path] = (file_stamp, embedding)
            if embedding is not None:
                entries.setdefault(embedding.name, embedding)
        self._files, self._entries, self._stamp = files, entries, stamp
        # longest names first, so "bad-hands-5" wins over "bad-hands" where both match
        names = sorted(entries, key=len, reverse=True)
        alternation = "|".join(re.escape(n) for n in names)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE) if names else None


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


_LIBRARIES: dict[Path, Library] = {}
_LIBRARIES_LOCK = threading.Lock()


def library(models_dir: Path) -> Library:
    """The one Library of a models folder (shared by the engine and the listing)."""
    key = Path(models_dir).resolve()
    with _LIBRARIES_LOCK:
        return _LIBRARIES.setdefault(key, Library(key))


def family_widths(pipe) -> tuple[int, ...]:
    """The token-embedding widths of a pipeline's text encoders: (768,) SD1, (1024,) SD2, (768, 1280) SDXL."""
    return tuple(encoder.get_input_embeddings().embedding_dim for _, encoder in _encoders(pipe))


def list_embeddings(models_dir: Path, family_widths: tuple[int, ...] | None) -> dict:
    """A1111's `/sdapi/v1/embeddings`: those that fit a model with these text-encoder widths are "loaded", the
    others "skipped" (None: every one loaded, as when no model is known)."""
    out: dict[str, dict] = {"loaded": {}, "skipped": {}}
    entries = library(models_dir).entries()
    for name in sorted(entries, key=str.lower):
        embedding = entries[name]
        out["loaded" if embedding.fits(family_widths) else "skipped"][name] = embedding.info()
    return out


def _encoders(pipe) -> list[tuple]:
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    return [(t, e) for t, e in pairs if t is not None and e is not None]


class Embeddings(Feature):
    name = "embeddings"

    def __init__(self, setup):
        super().__init__(setup)
        self.library = library(setup.models_dir)

    def wanted(self, job: Job) -> bool:
        return bool(job.embeddings) or bool(self.library.used(job.prompt, job.negative_prompt))

    def key(self, job: Job) -> None:
        return None  # acts on this job's own prompts only: batch-mates may differ

    def check(self, job: Job) -> None:
        missing = [name for name in job.embeddings if self.library.lookup(name) is None]
        if missing:
            names = sorted(self.library.entries(), key=str.lower)
            raise InvalidRequest(
                f"embedding {', '.join(map(repr, missing))} not found in {self.library.folder}; available: "
                f"{', '.join(names) or 'none'}", details={"embeddings": missing, "available": names})

    def rewrite(self, run) -> None:
        used = set(self.library.used(run.prompt, run.negative))
        for asked in run.job.embeddings:
            found = self.library.lookup(asked)
            name = found.name if found is not None else asked  # None: removed since check(); plain text then
            if name not in used:
                run.prompt = f"{run.prompt}, {name}" if run.prompt.strip() else name
                used.add(name)

    @contextlib.contextmanager
    def encoding(self, run, pipe):
        entries = self.library.entries()
        widths = family_widths(pipe)
        wanted = [entries[n] for n in self.library.used(run.prompt, run.negative)]
        unfit = [e for e in wanted if not e.fits(widths)]
        vocabularies = [tokenizer.get_vocab() for tokenizer, _ in _encoders(pipe)] if len(unfit) < len(wanted) else []
        taken = [e for e in wanted if e not in unfit and any(e.name in v for v in vocabularies)]
        use = [e for e in wanted if e not in unfit and e not in taken]
        notes = []
        if unfit:
            notes.append(f"{', '.join(f'{e.name} (width {_plus(e.widths)})' for e in unfit)} skipped: made for "
                         f"another model; this model's text encoder width is {_plus(widths)}")
        if taken:
            notes.append(f"{', '.join(e.name for e in taken)} not applied: the name is a word of the CLIP "
                         f"vocabulary; rename the file")
        if notes:
            run.not_applied["embeddings"] = "; ".join(notes)
        if use:  # A1111's `TI hashes: "name: <sha256[:12]>, ..."` (":" and "," would break the list)
            run.params["TI hashes"] = ", ".join(f"{re.sub('[:,]', '', e.name)}: {self.setup.sha256(e.path)[:12]}"
                                                for e in use)
        with contextlib.ExitStack() as stack:
            for i, (tokenizer, encoder) in enumerate(_encoders(pipe) if use else []):
                stack.enter_context(_loaded(pipe, tokenizer, encoder, [(e.name, e.tensors[i]) for e in use]))
            yield


def _plus(widths: tuple[int, ...]) -> str:
    return " + ".join(map(str, widths))


@contextlib.contextmanager
def _loaded(pipe, tokenizer, encoder, tokens: list[tuple[str, torch.Tensor]]):
    """`tokens` loaded into one tokenizer and text encoder, and the two exactly as they were afterwards."""
    module = encoder.get_input_embeddings()
    weight, rows, vocab_size = module.weight.data, module.num_embeddings, encoder.config.vocab_size
    names = [name for name, _ in tokens]
    before = set(tokenizer.added_tokens_encoder)
    offload = getattr(pipe, "_offload_device", None) if getattr(pipe, "_all_hooks", None) else None
    try:
        # Grown here with mean_resizing off, diffusers' own resize is a no-op: transformers' default draws the new
        # rows from the old ones' covariance, seconds on a CPU (49408 × 1280), and they are overwritten anyway.
        encoder.resize_token_embeddings(len(tokenizer) + sum(t.shape[0] for _, t in tokens), mean_resizing=False)
        pipe.load_textual_inversion([t for _, t in tokens], token=names, tokenizer=tokenizer, text_encoder=encoder)
        if offload is not None:
            # with model CPU offload (--offload) diffusers re-hooks the models onto the text encoder's device,
            # which offloading made the CPU: put them back on the accelerator
            pipe.enable_model_cpu_offload(device=offload)
        yield
    finally:
        added = [t for t in tokenizer.added_tokens_encoder if t not in before]
        if added:
            pipe.unload_textual_inversion(added, tokenizer=tokenizer, text_encoder=encoder)
        # unload rebuilds the embedding from the rows up to the last special token and leaves the config grown:
        # the original module and tensor go back instead
        module.weight.data, module.num_embeddings = weight, rows
        encoder.set_input_embeddings(module)
        encoder.config.vocab_size = vocab_size

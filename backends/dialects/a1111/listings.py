"""What A1111's list routes answer: the /samplers and /schedulers payloads (A1111's wire format of the core
sampler table, backends/samplers.py), the model files found on disk (/sd-vae, /loras) and /memory. /embeddings is the
Service's `embedding_listing()` as it is."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ...sampler_table import A1111_SAMPLERS, SCHEDULES

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".ckpt")


def a1111_samplers() -> list[dict]:
    """GET /sdapi/v1/samplers: [{"name", "aliases", "options"}] in A1111's order (options are strings, as
    pydantic v1 gave them)."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.options.items()}}
            for s in A1111_SAMPLERS]


def a1111_schedulers() -> list[dict]:
    """GET /sdapi/v1/schedulers: [{"name", "label", "aliases", "default_rho", "need_inner_model"}]."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) if s.aliases else None,
            "default_rho": float(s.default_rho),
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULES
    ]


# --------------------------------------------------------------------------------------------- files on disk


def files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a .safetensors header (LoRA training info), without reading the weights."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > 100 * 1024 * 1024:
                return {}
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") or {}
        return {k: v for k, v in meta.items() if isinstance(k, str)}
    except (OSError, ValueError, struct.error):
        return {}


def sd_vae(vaes: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """GET /sdapi/v1/sd-vae: the VAEs a request can name in `sd_vae` (no Automatic/None rows, as A1111)."""
    return [{"model_name": name, "filename": path} for name, path in vaes]


def loras(models_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for p in files(models_dir / "Lora", WEIGHT_SUFFIXES):
        meta = safetensors_metadata(p) if p.suffix.lower() == ".safetensors" else {}
        alias = meta.get("ss_output_name") or p.stem
        rows.append({"name": p.stem, "alias": alias, "path": str(p), "metadata": meta})
    return rows


def sd_model_rows(models) -> list[dict[str, Any]]:
    """GET /sd-models rows; a single-file checkpoint's `config` is the .yaml beside it, when there is one."""
    rows = []
    for m in models:
        config = None
        if m.kind == "single_file":
            yaml = Path(m.source).with_suffix(".yaml")
            config = str(yaml) if yaml.is_file() else None
        rows.append({"title": m.title, "model_name": m.name, "hash": m.hash, "sha256": m.sha256,
                     "filename": m.source, "config": config})
    return rows


def memory() -> dict[str, Any]:
    """GET /memory: the process's RAM and, when there is a CUDA device, torch's allocator statistics."""
    try:
        import psutil

        process = psutil.Process()
        rss = process.memory_info().rss
        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": rss, "total": vm.total}
    except Exception as e:  # psutil missing or a sandbox hiding /proc
        ram = {"error": str(e)}
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("cuda not available")
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as e:
        cuda = {"error": str(e)}
    return {"ram": ram, "cuda": cuda}

"""LoRAs from the A1111 `models/Lora/` folder, applied per job through diffusers' PEFT adapters.

An adapter stays loaded on the pipeline once used (loading is the slow part); each job activates exactly the
ones it asks for, with its weights, and a job that asks for none runs with all of them switched off.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..job import InvalidRequest, Lora, LoraNotFound

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")


class LoraLibrary:
    def __init__(self, models_dir: Path):
        self.folder = Path(models_dir) / "Lora"

    def files(self) -> dict[str, Path]:
        """name (file stem, as A1111 names them) → path."""
        if not self.folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.folder.rglob("*")) if p.suffix.lower() in SUFFIXES and p.is_file()}

    def path(self, name: str) -> Path:
        files = self.files()
        found = files.get(name) or {k.lower(): v for k, v in files.items()}.get(name.lower())
        if found is None:
            raise LoraNotFound(
                f"LoRA {name!r} not found in {self.folder}; available: {', '.join(files) or 'none'}",
                details={"lora": name, "available": list(files)},
            )
        return found


def _adapter_name(name: str) -> str:
    # PEFT adapter names become module attribute names: keep them to word characters.
    return "lora_" + re.sub(r"\W", "_", name)


def apply_loras(pipe, loras: list[Lora], library: LoraLibrary) -> None:
    """Activate exactly `loras` on `pipe`, loading any not yet loaded."""
    loaded = set(pipe.get_list_adapters().get("unet", [])) if _has_adapters(pipe) else set()
    if not loras:
        if loaded:
            pipe.disable_lora()
        return
    names, weights = [], []
    for lora in loras:
        adapter = _adapter_name(lora.name)
        if adapter not in loaded:
            path = library.path(lora.name)
            try:
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
            except Exception as e:  # wrong family, wrong format, damaged file
                log.warning("LoRA %s failed to load", path, exc_info=True)
                raise InvalidRequest(f"LoRA {lora.name!r} cannot be used with this model: {e}") from None
            loaded.add(adapter)
        names.append(adapter)
        weights.append(float(lora.weight))
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=weights)


def _has_adapters(pipe) -> bool:
    return bool(getattr(pipe.unet, "peft_config", None))


def write_tiny_lora(pipe, path: Path, seed: int = 0, rank: int = 4) -> Path:
    """A random-weight LoRA for a tiny pipeline's UNet attention, in the diffusers LoRA file layout."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe.unet.add_adapter(config, adapter_name="tiny")
        layers = get_peft_model_state_dict(pipe.unet, adapter_name="tiny")
    pipe.unet.delete_adapters("tiny")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    return path

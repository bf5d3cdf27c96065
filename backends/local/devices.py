"""Which device and precision this process computes on, and what runs the UNet on a CPU: read once at startup by
the server (backends/assembly.py) and by each Ray Serve replica (backends/cluster/), which may sit on another
machine with other hardware."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import torch

from ..config import Config, ConfigError

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_device(name: str) -> str:
    if name != "auto":
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if not available.get(name, False):
            raise ConfigError(f"--device {name}: no such device on this machine")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), where bf16 weights run the UNet in about
    half fp32's time. Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: that is true on any AVX-512 CPU, which
    only emulates bf16 (slower than fp32)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: the kernel's CPU flags (Linux)
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        # Half precision where the device is made for it, bf16 on a CPU that computes it natively; fp32 on other
        # CPUs (and with --dtype fp32) keeps results exact and portable.
        if device in ("cuda", "mps"):
            return torch.float16
        return torch.bfloat16 if device == "cpu" and native_bf16() else torch.float32
    return DTYPES[name]


CPU_ENGINES = ("torch", "openvino")


def cpu_engine(config: Config, device: str) -> str:
    """`[server] cpu_engine` checked: "openvino" needs the package, and applies only when the device is the CPU."""
    if config.cpu_engine not in CPU_ENGINES:
        raise ConfigError(f"cpu_engine {config.cpu_engine!r}: expected one of {', '.join(CPU_ENGINES)}")
    if config.cpu_engine != "openvino":
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ConfigError("cpu_engine openvino: the openvino package is not installed (pip install openvino)") from None
    if device != "cpu":
        log.warning("cpu_engine openvino applies to the CPU only; the device is %s, where torch runs", device)
        return "torch"
    return "openvino"

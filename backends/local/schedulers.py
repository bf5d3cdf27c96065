"""Building the diffusers scheduler a `SamplerChoice` (backends/samplers.py) names, for the local engine."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..sampler_table import SCHEDULER_CLASSES
from ..samplers import SamplerChoice, _hashable

__all__ = ["make_scheduler", "scheduler_class"]


@lru_cache(maxsize=None)
def scheduler_class(name: str) -> type:
    """The diffusers class called `name` (imported once)."""
    import diffusers

    return getattr(diffusers, name)


# Prototype schedulers by (class, base config, choice config). from_config costs 1-3 ms (and 30-45 ms for
# DPMSolverSDEScheduler, whose __init__ computes 1000 second-order timesteps); a deepcopy of a prototype costs
# 0.15-0.6 ms and gives a scheduler no other job shares (set_timesteps/step mutate it).
_PROTOTYPES: OrderedDict[tuple, Any] = OrderedDict()
_PROTOTYPES_MAX = 64
_PROTOTYPES_LOCK = threading.Lock()


def make_scheduler(base_scheduler, choice: SamplerChoice, seed: int | Sequence[int] | None = None):
    """A new scheduler for `choice`, built as `Cls.from_config(base_scheduler.config, **choice.config)` so the
    model's betas, prediction_type etc. are kept. The base scheduler is never modified.

    `seed` only matters for DPMSolverSDEScheduler ("DPM++ SDE"), whose noise ignores the pipeline's generators:
    pass the per-image seeds of the call (a list, one per image in batch order) and each image gets its own
    Brownian tree, as in A1111, so image k equals a solo run with its seed; an int seeds one tree for the whole
    batch (diffusers' behaviour: only a batch of one is reproducible alone). None: random noise.
    """
    cls = scheduler_class(choice.scheduler_class)
    key = (choice.scheduler_class, _hashable(base_scheduler.config), choice.key[1])
    with _PROTOTYPES_LOCK:
        proto = _PROTOTYPES.get(key)
        if proto is not None:
            _PROTOTYPES.move_to_end(key)
    if proto is None:
        proto = cls.from_config(base_scheduler.config, **choice.config)
        with _PROTOTYPES_LOCK:
            _PROTOTYPES[key] = proto
            while len(_PROTOTYPES) > _PROTOTYPES_MAX:
                _PROTOTYPES.popitem(last=False)
    scheduler = copy.deepcopy(proto)
    if SCHEDULER_CLASSES[choice.scheduler_class].seeded_by_config and seed is not None:
        value = int(seed) if isinstance(seed, int) else [int(s) for s in seed]
        scheduler.register_to_config(noise_sampler_seed=value)
        scheduler.noise_sampler_seed = value
    return scheduler



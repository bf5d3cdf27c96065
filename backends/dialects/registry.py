"""The registry: one `Style` → its dialect class. The only place that lists the styles' packages; routes, tabs and
the relay (through `backends/assembly.py`) find a style's code here. Adding a style is one line below."""

from __future__ import annotations

import threading
import weakref
from typing import Mapping

from ..job import Style
from ..service import Service
from .a1111 import A1111Dialect
from .base import Dialect
from .modelslab import ModelslabDialect
from .openai import OpenAIDialect
from .stability_v1 import StabilityV1Dialect
from .stability_v2 import StabilityV2Dialect

DIALECTS: Mapping[Style, type[Dialect]] = {
    Style.A1111: A1111Dialect,
    Style.STABILITY_V1: StabilityV1Dialect,
    Style.STABILITY_V2: StabilityV2Dialect,
    Style.MODELSLAB: ModelslabDialect,
    Style.OPENAI: OpenAIDialect,
}

_lock = threading.Lock()
_instances: "weakref.WeakKeyDictionary[object, dict[Style, Dialect]]" = weakref.WeakKeyDictionary()


def dialects(service: Service) -> dict[Style, Dialect]:
    """Each style's dialect for `service`, made once: its HTTP routes and its UI tab share one object (options,
    result stores and rate limits live in it)."""
    with _lock:
        made = _instances.get(service)
        if made is None:
            made = _instances[service] = {style: cls(service) for style, cls in DIALECTS.items()}
        return made


def dialect(service: Service, style: Style | str) -> Dialect:
    return dialects(service)[Style(style)]

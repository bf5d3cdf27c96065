"""The engine's optional capabilities, one module each, all behind `base.Feature` (docs/architecture.md
"Features"). `FEATURES` is the registry: the order is the order their hooks run (translation before enhancement,
embeddings before encoding, the safety checker last)."""

from __future__ import annotations

from .base import Feature, Setup
from .embeddings import Embeddings
from .enhance import Enhance
from .panorama import Panorama
from .safety import SafetyChecker
from .sag import SelfAttentionGuidance
from .tiling import Tiling
from .tome import TokenMerging
from .translate import Translate
from .vae import Vae

FEATURES: list[type[Feature]] = [Translate, Enhance, Embeddings, Vae, Panorama, SelfAttentionGuidance, TokenMerging,
                                 Tiling, SafetyChecker]


def make_features(setup: Setup) -> list[Feature]:
    return [cls(setup) for cls in FEATURES]


__all__ = ["Feature", "Setup", "FEATURES", "make_features"]

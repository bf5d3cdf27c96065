"""The engine's optional capabilities, one module each, all behind `base.Feature` (docs/architecture.md
"Features"). `FEATURES` is the registry: the order is the order their hooks run (translation before enhancement,
embeddings before encoding, the safety checker last)."""

from __future__ import annotations

from .base import Feature, Setup

FEATURES: list[type[Feature]] = []


def make_features(setup: Setup) -> list[Feature]:
    return [cls(setup) for cls in FEATURES]


__all__ = ["Feature", "Setup", "FEATURES", "make_features"]

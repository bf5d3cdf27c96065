"""Image helpers the engine-level tests share: exact PNG bytes (determinism) and pixels as int16 (differences)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)

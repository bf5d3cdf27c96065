"""The files behind ModelsLab's output URLs: `<outputs>/modelslab/<prefix>-<i>.png`, served at
`/generations/<prefix>-<i>.png` until they expire. Local generations and the outputs of requests forwarded to a
ModelsLab gateway (downloaded, so that a caller never depends on the gateway's CDN) are written and served alike."""

from __future__ import annotations

import io
import re
from pathlib import Path

from ...images import UnreadableImage, open_image
from ...job import GenerationFailed
from ...outputs import fresh_file, write_atomic
from .options import GENERATIONS, OUTPUT_DIR, Settings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NAME = re.compile(r"[0-9a-f-]{36}-\d+\.png")  # <uuid4>-<index>.png


def open_output(data: bytes, what: str):
    """An output's bytes as an image; GenerationFailed (the gateway's answer was bad) when they are not one."""
    try:
        return open_image(data)
    except UnreadableImage as e:
        raise GenerationFailed(f"{what} is not an image ({e})") from None


class GenerationFiles:
    def __init__(self, outputs_dir: Path | str, settings: Settings):
        self.dir = Path(outputs_dir) / OUTPUT_DIR
        self.settings = settings  # read at each use: expiry_hours, public_url

    def base_url(self, request_base: str) -> str:
        """Where callers reach us: `[modelslab] public_url` behind a proxy, else the request's own base."""
        return self.settings.public_url or request_base.rstrip("/")

    @staticmethod
    def name(prefix: str, index: int) -> str:
        return f"{prefix}-{index}.png"

    def link(self, base: str, prefix: str, index: int) -> str:
        return f"{base}{GENERATIONS}/{self.name(prefix, index)}"

    def write(self, prefix: str, index: int, data: bytes) -> Path:
        """Write one output (PNG bytes; anything else is converted, since the route serves image/png)."""
        if not data.startswith(PNG_SIGNATURE):
            buffer = io.BytesIO()
            open_output(data, f"output {index}").save(buffer, format="PNG")
            data = buffer.getvalue()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / self.name(prefix, index)
        write_atomic(path, data)
        return path

    def find(self, name: str) -> Path | None:
        """The file behind an output URL, or None when it is unknown, not written yet, or expired."""
        return fresh_file(self.dir, name, _NAME, self.settings.expiry_hours * 3600)

"""The files behind `response_format: url` answers: `<outputs>/openai/<uuid>-<i>.<ext>`, served at
`/generations/openai/<name>` for `[openai] url_expiry_s` (default one hour: §7 asks for at least 60 minutes).
ModelsLab's `/generations/<name>` files are its own; these live one folder down so neither shadows the other."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from ...outputs import fresh_file, write_atomic
from .options import FILES, Settings

OUTPUT_DIR = "openai"
_NAME = re.compile(r"[0-9a-f]{32}-\d+\.(png|jpeg|webp)")
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class ImageFiles:
    def __init__(self, outputs_dir: Path | str, settings: Settings):
        self.dir = Path(outputs_dir) / OUTPUT_DIR
        self.settings = settings

    def base_url(self, request_base: str) -> str:
        """Where callers reach us: `[openai] public_url` behind a proxy, else the request's own base."""
        return self.settings.public_url or request_base.rstrip("/")

    def write(self, data: bytes, ext: str, index: int, prefix: str | None = None) -> str:
        """Write one answer file; its name."""
        name = f"{prefix or uuid.uuid4().hex}-{index}.{ext}"
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / name, data)
        return name

    def link(self, base: str, name: str) -> str:
        return f"{base}{FILES}/{name}"

    def find(self, name: str) -> tuple[Path, str] | None:
        """(the file, its media type) behind a URL, or None when unknown or expired."""
        path = fresh_file(self.dir, name, _NAME, self.settings.url_expiry_s)
        return (path, MEDIA[path.suffix.lstrip(".")]) if path is not None else None

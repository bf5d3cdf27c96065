"""Saving generated images under the outputs folder, A1111's layout:

    outputs/txt2img-images/2024-07-01/00042-1234567.png

Files are written to a temporary name in the same folder and renamed into place, so a reader (a gallery,
an rsync) never sees half a file. The number is one more than the highest already in the day's folder.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from .images import EXTENSIONS, encode_image, normalise_format

# One lock for the process: two requests finishing together must not pick the same number.
_lock = threading.Lock()


def day_folder(outputs_dir: Path, kind: str, when: datetime.date | None = None) -> Path:
    return Path(outputs_dir) / kind / (when or datetime.date.today()).isoformat()


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_bytes(data: bytes, outputs_dir: Path, kind: str, seed: int | str, ext: str = "png", *,
               prefix: str = "") -> Path:
    """Write an encoded image as `outputs_dir/kind/YYYY-MM-DD/[prefix]NNNNN-<seed>.<ext>`, numbered one past the
    highest in that folder (under the one process lock) and renamed into place."""
    folder = day_folder(outputs_dir, kind)
    with _lock:
        folder.mkdir(parents=True, exist_ok=True)
        number = _next_number(folder, prefix)
        path = folder / f"{prefix}{number:05d}-{seed}.{ext}"
        write_atomic(path, data)
    return path


def save_image(
    image: Image.Image,
    outputs_dir: Path,
    kind: str,
    seed: int | str,
    infotext: str | None = None,
    fmt: str = "png",
    *,
    quality: int = 80,
    prefix: str = "",
) -> Path:
    """Save into `outputs_dir/kind/YYYY-MM-DD/[prefix]NNNNN-<seed>.<ext>` with the infotext embedded."""
    pil_format = normalise_format(fmt)
    data = encode_image(image, fmt, infotext, quality=quality)
    return save_bytes(data, outputs_dir, kind, seed, EXTENSIONS[pil_format], prefix=prefix)


def _next_number(folder: Path, prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    highest = -1
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = pattern.match(entry.name)
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def fresh_file(folder: Path, name: str, pattern: re.Pattern[str], max_age_s: float) -> Path | None:
    """The file `name` in `folder` behind a URL we served, or None when the name is not one of ours (`pattern`,
    which also keeps it inside the folder), the file is missing or not written yet, or it is older than
    `max_age_s` (the URL has expired)."""
    if not pattern.fullmatch(name):
        return None
    path = Path(folder) / name
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    return path if age <= max_age_s else None

"""Saving generated images under the outputs folder, A1111's layout:

    outputs/txt2img-images/2024-07-01/00042-1234567.png

Files are written to a temporary name in the same folder and renamed into place, so a reader (a gallery,
an rsync) never sees half a file. The number is one more than the highest already in the day's folder.

A saved PNG records who made it (`OWNER_CHUNK`: a keyed hash of the owner, never the owner itself, so neither an
API key's hash nor a login or an address leaves in a shared file), for the UI's per-user History.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from .images import EXTENSIONS, encode_image, normalise_format

# One lock for the process: two requests finishing together must not pick the same number.
_lock = threading.Lock()
OWNER_CHUNK = "sdgate-owner"
SECRET_NAME = ".sdgate-owner-secret"  # in the outputs folder, so the hashes stay valid with the images
_secrets: dict[str, bytes] = {}
_tags: dict[str, tuple[int, int, str | None]] = {}  # path → (mtime_ns, size, stored owner tag)
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]")


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
    seed, ext, prefix = file_part(seed), file_part(ext), file_part(prefix)
    if not folder.resolve().is_relative_to(Path(outputs_dir).resolve()):
        raise ValueError(f"output kind {kind!r} is not a folder inside the outputs")
    with _lock:
        folder.mkdir(parents=True, exist_ok=True)
        number = _next_number(folder, prefix)
        path = folder / f"{prefix}{number:05d}-{seed}.{ext}"
        write_atomic(path, data)
    return path


def file_part(value: int | str) -> str:
    """A piece of a file name (a seed, an extension) with nothing that could leave the folder: a seed that came
    from a gateway's answer is not trusted to be a number."""
    return _UNSAFE.sub("_", str(value))


def owner_tag(outputs_dir: Path, owner: str) -> str:
    """What `OWNER_CHUNK` holds for `owner` ("user:alice", "ip:…", "key:…"): an HMAC under a secret kept in the
    outputs folder (a plain hash of an address could be reversed by trying every address)."""
    return hmac.new(_secret(Path(outputs_dir)), owner.encode(), hashlib.sha256).hexdigest()[:32]


def stored_owner(path: Path) -> str | None:
    """The `OWNER_CHUNK` of a saved image (None: none recorded, or not a PNG), cached by modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = str(path)
    cached = _tags.get(key)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    try:
        with Image.open(path) as image:  # text chunks before the pixels are read with the header
            tag = image.info.get(OWNER_CHUNK) if image.format == "PNG" else None
    except (OSError, ValueError):
        tag = None
    tag = tag if isinstance(tag, str) else None
    _tags[key] = (st.st_mtime_ns, st.st_size, tag)
    return tag


def _secret(outputs_dir: Path) -> bytes:
    key = str(outputs_dir.resolve())
    with _lock:
        if key not in _secrets:
            path = outputs_dir / SECRET_NAME
            try:
                secret = bytes.fromhex(path.read_text().strip())
            except (OSError, ValueError):
                secret = b""
            if len(secret) < 16:
                secret = secrets.token_bytes(32)
                outputs_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secret.hex())
            _secrets[key] = secret
        return _secrets[key]


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
    owner: str | None = None,
) -> Path:
    """Save into `outputs_dir/kind/YYYY-MM-DD/[prefix]NNNNN-<seed>.<ext>` with the infotext embedded, and a PNG
    with its owner's tag (`owner_tag`)."""
    pil_format = normalise_format(fmt)
    chunks = {OWNER_CHUNK: owner_tag(outputs_dir, owner)} if owner else None
    data = encode_image(image, fmt, infotext, quality=quality, text_chunks=chunks)
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

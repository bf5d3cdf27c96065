"""A1111's image operations in pixel space: its resize modes, "fill" for masked content, the grid, and the
upscalers this server has (docs/reference/a1111_features.md §4)."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter, ImageOps

MAX_UPSCALE_SIDE = 16384

# Pixel-space upscalers this server has (A1111's built-ins; model upscalers such as ESRGAN are not shipped).
UPSCALERS: dict[str, Any] = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
# Hires-fix latent modes (§3.7), by name: the engine resizes the latents with them (backends/local/hires.py
# LATENT_MODES holds their interpolation; a dialect does not import the engine).
LATENT_UPSCALE_MODES: tuple[str, ...] = (
    "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
    "Latent (nearest-exact)",
)


def resize_image(
    mode: int, image: Image.Image, width: int, height: int, resample=Image.Resampling.LANCZOS
) -> Image.Image:
    """A1111's resize modes: 0/3 stretch, 1 cover and centre-crop, 2 fit and fill the bars by stretching the
    image's edge rows/columns."""
    if image.size == (width, height):
        return image
    if mode == 1:
        scale = max(width / image.width, height / image.height)
        w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
        resized = image.resize((w, h), resample)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == 2:
        scale = min(width / image.width, height / image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        resized = image.resize((w, h), resample)
        canvas = Image.new(image.mode, (width, height))
        x, y = (width - w) // 2, (height - h) // 2
        canvas.paste(resized, (x, y))
        if h < height:  # bars above and below: stretch the first/last row
            if y > 0:
                canvas.paste(resized.crop((0, 0, w, 1)).resize((w, y)), (x, 0))
            if height - y - h > 0:
                canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, height - y - h)), (x, y + h))
        if w < width:
            if x > 0:
                canvas.paste(canvas.crop((x, 0, x + 1, height)).resize((x, height)), (0, 0))
            if width - x - w > 0:
                canvas.paste(canvas.crop((x + w - 1, 0, x + w, height)).resize((width - x - w, height)), (x + w, 0))
        return canvas
    return image.resize((width, height), resample)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill' masked content: paint the masked area with colours diffused in from around it, by compositing
    progressively sharper blurs of the unmasked pixels (premultiplied alpha, so the hole adds no black)."""
    keep = ImageOps.invert(mask.convert("L"))
    source = Image.new("RGBA", image.size, (0, 0, 0, 0))
    source.paste(image.convert("RGBA"), mask=keep)
    premultiplied = source.convert("RGBa")
    filled = Image.new("RGBA", image.size, (0, 0, 0, 0))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = (premultiplied.filter(ImageFilter.GaussianBlur(radius)) if radius else premultiplied).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(layer)
    return filled.convert("RGB")


def make_grid(images: list[Image.Image], rows: int = -1) -> Image.Image:
    """A1111's grid: `rows` rows (default: the largest divisor of n not above √n)."""
    n = len(images)
    if rows <= 0:
        rows = max(1, int(n**0.5))
        while n % rows:
            rows -= 1
    cols = -(-n // rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


def read_mask(raw: Image.Image, invert: bool) -> Image.Image:
    """An inpainting mask as "L" (white is repainted). A mask drawn on a transparent layer carries the strokes in
    its alpha channel."""
    if raw.mode == "RGBA" and raw.getchannel("A").getextrema() != (255, 255):
        mask = raw.getchannel("A").point(lambda v: 255 if v > 128 else 0)
    else:
        mask = raw.convert("L")
    return ImageOps.invert(mask) if invert else mask

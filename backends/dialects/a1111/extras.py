"""POST /extra-single-image, /extra-batch-images (A1111's "Extras": upscaling in pixel space) and /png-info."""

from __future__ import annotations

import html
from typing import Any, Callable

from PIL import Image

from ...config import Limits
from ...images import decode_base64_image, encode_base64, read_infotext
from ...infotext import parse_generation_parameters, quote
from ...job import InvalidRequest
from .imaging import MAX_UPSCALE_SIDE, UPSCALERS
from .models import ExtrasBaseRequest


def check_upscalers(req: ExtrasBaseRequest) -> tuple[str, str]:
    names = (req.upscaler_1 or "None", req.upscaler_2 or "None")
    for name in names:
        if name not in UPSCALERS:
            available = ", ".join(UPSCALERS)
            raise InvalidRequest(f"could not find upscaler named {name}; available: {available}",
                                 details={"upscaler": name, "available": list(UPSCALERS)})
    return names


def upscale(image: Image.Image, req: ExtrasBaseRequest,
            warn: Callable[[str, str], None]) -> tuple[Image.Image, dict[str, Any]]:
    """The image upscaled as the request says, and the `Postprocess ...` infotext items saying how."""
    names = check_upscalers(req)
    if req.gfpgan_visibility or req.codeformer_visibility:
        warn("faces", "face restoration (GFPGAN/CodeFormer) is not available; ignored")
    if names[0] == "None":
        return image, {}
    info: dict[str, Any] = {}
    if req.resize_mode == 1:
        tw, th = req.upscaling_resize_w or 512, req.upscaling_resize_h or 512
        scale = max(tw / image.width, th / image.height)
        info["Postprocess upscale to"] = f"{tw}x{th}"
    else:
        scale = req.upscaling_resize if req.upscaling_resize is not None else 2.0
        info["Postprocess upscale by"] = scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if max(size) > MAX_UPSCALE_SIDE:
        raise InvalidRequest(
            f"the upscaled image would be {size[0]}x{size[1]}; the limit is {MAX_UPSCALE_SIDE} per side"
        )
    rgb = image.convert("RGB") if image.mode not in ("RGB", "RGBA", "L") else image

    def resized(name: str) -> Image.Image:
        out = rgb.resize(size, UPSCALERS[name])
        if req.resize_mode == 1 and req.upscaling_crop:
            left, top = (out.width - tw) // 2, (out.height - th) // 2
            out = out.crop((left, top, left + tw, top + th))
        return out

    result = resized(names[0])
    info["Postprocess upscaler"] = names[0]
    if names[1] != "None" and req.extras_upscaler_2_visibility:
        second = resized(names[1])
        result = Image.blend(result.convert("RGB"), second.convert("RGB"), float(req.extras_upscaler_2_visibility))
        info["Postprocess upscaler 2"] = names[1]
        info["Postprocess upscaler 2 visibility"] = req.extras_upscaler_2_visibility
    if req.resize_mode == 1 and req.upscaling_crop:
        info["Postprocess crop to"] = f"{tw}x{th}"
    return result, info


def extras_one(data: str, field: str, req: ExtrasBaseRequest, opts: dict[str, Any],
               warn: Callable[[str, str], None], limits: Limits | None = None) -> tuple[str, str]:
    """One image: (the upscaled file as base64, keeping the source's text chunks; the postprocessing text)."""
    image = decode_base64_image(data, field, limits)
    out, info = upscale(image, req, warn)
    text = ", ".join(f"{k}: {quote(v)}" for k, v in info.items())
    chunks = {k: v for k, v in (image.info or {}).items() if isinstance(k, str) and isinstance(v, str)}
    if text:
        chunks["postprocessing"] = text
    parameters = chunks.pop("parameters", None)
    encoded = encode_base64(out, str(opts["samples_format"]), parameters, quality=int(opts["jpeg_quality"]),
                            text_chunks=chunks)
    return encoded, text


def html_info(text: str) -> str:
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def png_info(image_b64: str | None, limits: Limits | None = None) -> dict[str, Any]:
    if not image_b64 or not image_b64.strip():
        return {"info": "", "items": {}, "parameters": {}}
    image = decode_base64_image(image_b64, "image", limits)
    geninfo, items = read_infotext(image)
    return {"info": geninfo or "", "items": items, "parameters": parse_generation_parameters(geninfo or "")}

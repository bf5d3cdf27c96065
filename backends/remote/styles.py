"""What the relay knows of API styles without knowing any style's fields: which of a gateway's styles a Job goes
out in, and which response headers describe one hop rather than the answer. Everything a style's wire format
says (requests, answers, forwarding paths and headers) is its dialect's (backends/dialects/<style>/upstream.py),
reached through the `UpstreamCodec` the service hands the relay."""

from __future__ import annotations

from typing import Any

from ..job import Style
from .config import GatewayConfig

# When a gateway speaks several styles and none is the caller's, the one that carries the most of a Job.
PREFERENCE = (Style.A1111, Style.MODELSLAB, Style.STABILITY_V1, Style.STABILITY_V2, Style.OPENAI)

# Response headers that describe one hop, not the answer (and cookies, which belong to the gateway's site).
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                         "server", "date", "set-cookie", "alt-svc", "proxy-authenticate", "upgrade", "trailer",
                         "te", "www-authenticate", "x-process-time"})


def pick_style(gateway: GatewayConfig, caller_style: Style | str | None) -> Style:
    if caller_style is not None and caller_style in gateway.styles:
        return Style(caller_style)
    return next(s for s in PREFERENCE if s in gateway.styles)


def response_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}

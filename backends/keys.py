"""API keys for the hosted-API styles (Stability, OpenAI: bearer header; ModelsLab: `key` in the body).

Keys come from the TOML config (`[keys] stability = ["..."]`, `modelslab = ["..."]`, `openai = ["..."]`) or the
environment (`SDGATE_STABILITY_KEYS`, `SDGATE_MODELSLAB_KEYS`, `SDGATE_OPENAI_KEYS`, comma separated). With no key
configured for a style, that style is open to loopback clients only: a server started with --listen must not hand
a GPU to the LAN (or a share link) without anyone having chosen to. Keys are compared in constant time and never
logged or echoed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets

from .job import Style

# key section → its environment variable. Both Stability styles share one set of keys, as a Stability account does.
STYLES = {"stability": "SDGATE_STABILITY_KEYS", "modelslab": "SDGATE_MODELSLAB_KEYS", "openai": "SDGATE_OPENAI_KEYS"}
SECTION = {Style.STABILITY_V1: "stability", Style.STABILITY_V2: "stability", Style.MODELSLAB: "modelslab",
           Style.OPENAI: "openai"}


def _section(style: Style | str) -> str:
    try:
        return SECTION.get(Style(style), str(style))
    except ValueError:
        return str(style)  # a section name ("stability") given directly


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host == "testclient":  # Starlette's TestClient
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiKeys:
    def __init__(self, raw_config: dict | None = None, environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        table = (raw_config or {}).get("keys", {})
        self._keys: dict[str, list[str]] = {}
        for style, env_name in STYLES.items():
            keys = [str(k) for k in table.get(style, [])]
            keys += [k.strip() for k in environ.get(env_name, "").split(",") if k.strip()]
            self._keys[style] = keys

    def configured(self, style: Style | str) -> bool:
        return bool(self._keys.get(_section(style)))

    def allows(self, style: Style | str, presented: str | None, client_host: str | None) -> bool:
        keys = self._keys.get(_section(style), [])
        if not keys:
            return is_loopback(client_host)
        if not presented:
            return False
        presented_b = presented.encode()
        # check every key (no early exit) so timing says nothing about which one nearly matched
        return sum(secrets.compare_digest(presented_b, k.encode()) for k in keys) > 0

    def startup_warnings(self, host: str) -> list[str]:
        if is_loopback(host):
            return []
        return [
            f"no {style} API keys configured: the {style} routes answer loopback clients only "
            f"(set [keys] {style} in the config or {env})"
            for style, env in STYLES.items()
            if not self.configured(style)
        ]


def bearer_token(authorization: str | None) -> str | None:
    """'Bearer sk-abc' → 'sk-abc'; a bare value is taken as is (some clients omit the scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else authorization.strip()

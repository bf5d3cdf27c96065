"""Gateway configuration: the `[[gateways]]` tables, `[routing]`, and `gateway:` model aliases.

```toml
[[gateways]]
name = "302ai"                      # how routing, aliases and the UI's Backend dropdown name it
base_url = "https://api.302.ai"     # scheme + host (+ port)
path_prefix = "/sd"                 # put between base_url and the upstream path ("" by default)
styles = ["stability_v1", "stability_v2"]   # the API styles it speaks
auth = "bearer"                     # bearer | raw | body_key | both | basic | none
key_env = "GW_302AI_KEY"            # env var holding the key (basic: "user:pass"); `key = "..."` works, with a warning

[routing]                           # every request of a style goes to a gateway
stability_v1 = "302ai"

[models.aliases]                    # or only requests naming one model/engine
"remote-sdxl" = "gateway:302ai/stable-diffusion-xl-1024-v1-0"
```

Every problem is a `ConfigError` with one line naming the gateway and the field, raised at startup.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..config import ConfigError

log = logging.getLogger(__name__)

STYLES = ("a1111", "stability_v1", "stability_v2", "modelslab", "openai")
# Other spellings of a style name seen in configs and in the UI's tab ids.
STYLE_ALIASES = {"stability_v2beta": "stability_v2", "v2beta": "stability_v2", "v1": "stability_v1", "sdapi": "a1111"}
AUTH_STYLES = ("bearer", "raw", "body_key", "both", "basic", "none")
GATEWAY_TARGET = "gateway:"  # an alias target "gateway:<name>[/<upstream model>]"

# field → (default, type, lower bound): the numeric knobs of a gateway, as data.
NUMBERS: dict[str, tuple[float, type, float]] = {
    "connect_timeout": (10.0, float, 0.001),
    "read_timeout": (180.0, float, 0.001),  # one synchronous generation; ultra/sd3 take tens of seconds
    "retries": (3, int, 0),  # retries after the first attempt
    "backoff": (1.0, float, 0.0),  # first retry delay in seconds; doubles each time, with jitter
    "max_backoff": (30.0, float, 0.0),
    "deadline": (300.0, float, 0.001),  # everything for one request: attempts, waits, ModelsLab polling
    "max_concurrency": (4, int, 1),  # requests in flight to this gateway at once
    "poll_interval": (3.0, float, 0.0),  # ModelsLab fetch polling
    "max_response_mb": (64.0, float, 0.001),  # larger answers are refused, not buffered
}


def canonical_style(name: str) -> str | None:
    name = str(name).strip().lower()
    name = STYLE_ALIASES.get(name, name)
    return name if name in STYLES else None


@dataclass(frozen=True)
class GatewayConfig:
    name: str
    base_url: str
    path_prefix: str = ""
    styles: tuple[str, ...] = ()
    auth: str = "bearer"
    key: str | None = field(default=None, repr=False)  # never printed: a dataclass repr would leak it
    model: str | None = None  # upstream model for requests that name none (e.g. an A1111 job to a v1 gateway)
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. Stability-Client-ID
    retry_post_on_500: bool = False  # generation is billed and not idempotent: off unless asked
    connect_timeout: float = 10.0
    read_timeout: float = 180.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    deadline: float = 300.0
    max_concurrency: int = 4
    poll_interval: float = 3.0
    max_response_mb: float = 64.0

    def url(self, upstream_path: str) -> str:
        """docs/reference/hosted_apis.md D.4 item 1: base_url + path_prefix + upstream path."""
        return self.base_url.rstrip("/") + self.path_prefix + upstream_path

    def serves(self, style: str) -> bool:
        return style in self.styles

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class RelayConfig:
    gateways: Mapping[str, GatewayConfig] = field(default_factory=dict)
    routing: Mapping[str, str] = field(default_factory=dict)  # style → gateway name
    warnings: tuple[str, ...] = ()

    def for_style(self, style: str) -> list[GatewayConfig]:
        return [g for g in self.gateways.values() if g.serves(style)]


def _fail(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


def _gateway(table: Any, index: int, environ: Mapping[str, str], warnings: list[str]) -> GatewayConfig:
    where = f"[[gateways]] #{index + 1}"
    if not isinstance(table, dict):
        _fail(where, "must be a table")
    name = str(table.get("name") or "").strip()
    if not name or any(c in name for c in "/: "):
        _fail(where, "needs a `name` without '/', ':' or spaces")
    where = f"gateway {name!r}"
    known = {"name", "base_url", "path_prefix", "styles", "auth", "key", "key_env", "model", "headers",
             "retry_post_on_500", *NUMBERS}
    unknown = sorted(set(table) - known)
    if unknown:
        _fail(where, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    base_url = str(table.get("base_url") or "")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        _fail(where, f"base_url must be http(s)://host[:port], got {base_url!r}")
    prefix = str(table.get("path_prefix") or "").strip()
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        _fail(where, f"path_prefix must start with '/' and not end with one (e.g. \"/sd\"), got {prefix!r}")

    raw_styles = table.get("styles")
    if isinstance(raw_styles, str):
        raw_styles = [raw_styles]
    if not raw_styles or not isinstance(raw_styles, list):
        _fail(where, f"`styles` must list what it speaks: {', '.join(STYLES)}")
    styles = []
    for s in raw_styles:
        c = canonical_style(s)
        if c is None:
            _fail(where, f"unknown style {s!r}; known: {', '.join(STYLES)}")
        styles.append(c)

    auth = str(table.get("auth", "bearer")).strip().lower()
    if auth not in AUTH_STYLES:
        _fail(where, f"auth must be one of {', '.join(AUTH_STYLES)}, got {auth!r}")
    key = None
    if "key_env" in table:
        env = str(table["key_env"])
        key = environ.get(env)
        if not key:
            _fail(where, f"environment variable {env} (key_env) is not set")
    elif "key" in table:
        key = str(table["key"])
        warnings.append(f"gateway {name!r}: the key is written in the config file; prefer key_env")
    if auth != "none" and not key:
        _fail(where, f"auth {auth!r} needs a key: set key_env to the environment variable holding it")
    if auth == "basic" and key and ":" not in key:
        _fail(where, "auth 'basic' wants the key as user:pass")

    headers = table.get("headers", {})
    if not isinstance(headers, dict):
        _fail(where, "headers must be a table of name = value")
    for h in headers:
        if h.lower() == "authorization":
            _fail(where, "set the key with auth/key_env, not an Authorization header")

    numbers = {}
    for key_name, (default, kind, lowest) in NUMBERS.items():
        value = table.get(key_name, default)
        try:
            if isinstance(value, bool):
                raise ValueError
            value = kind(value)
        except (TypeError, ValueError):
            _fail(where, f"{key_name} must be a number, got {value!r}")
        if value < lowest:
            _fail(where, f"{key_name} must be at least {lowest}, got {value}")
        numbers[key_name] = value

    return GatewayConfig(
        name=name, base_url=base_url.rstrip("/"), path_prefix=prefix, styles=tuple(dict.fromkeys(styles)),
        auth=auth, key=key, model=str(table["model"]) if table.get("model") else None,
        headers={str(k): str(v) for k, v in headers.items()},
        retry_post_on_500=bool(table.get("retry_post_on_500", False)), **numbers,
    )


def parse_relay_config(raw: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """`Config.raw` → RelayConfig; every problem is a one-line ConfigError."""
    raw = raw or {}
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    tables = raw.get("gateways", [])
    if isinstance(tables, dict):  # [gateways.name] tables instead of [[gateways]]
        tables = [{"name": k, **v} if isinstance(v, dict) else v for k, v in tables.items()]
    if not isinstance(tables, list):
        raise ConfigError("[[gateways]] must be an array of tables")
    gateways: dict[str, GatewayConfig] = {}
    for i, table in enumerate(tables):
        gw = _gateway(table, i, environ, warnings)
        if gw.name in gateways or gw.name == "local":
            raise ConfigError(f"gateway {gw.name!r}: the name is used twice (or is the reserved 'local')")
        gateways[gw.name] = gw

    routing: dict[str, str] = {}
    for style_name, target in (raw.get("routing") or {}).items():
        style = canonical_style(style_name)
        if style is None:
            raise ConfigError(f"[routing] {style_name}: unknown style; known: {', '.join(STYLES)}")
        target = str(target)
        if target == "local":
            continue
        if target not in gateways:
            raise ConfigError(f"[routing] {style_name} = {target!r}: no such gateway")
        routing[style] = target

    aliases = ((raw.get("models") or {}).get("aliases") or {})
    for alias, target in aliases.items():
        parsed = parse_target(str(target))
        if parsed and parsed[0] not in gateways:
            raise ConfigError(f"[models.aliases] {alias!r} = {target!r}: no such gateway {parsed[0]!r}")
    for w in warnings:
        log.warning(w)
    return RelayConfig(gateways=gateways, routing=routing, warnings=tuple(warnings))


def parse_target(target: str | None) -> tuple[str, str | None] | None:
    """'gateway:up/model-x' → ('up', 'model-x'); 'gateway:up' → ('up', None); anything else → None."""
    if not target or not target.startswith(GATEWAY_TARGET):
        return None
    name, _, model = target[len(GATEWAY_TARGET):].partition("/")
    return name, (model or None)


def target(gateway: str, model: str | None = None) -> str:
    return f"{GATEWAY_TARGET}{gateway}" + (f"/{model}" if model else "")

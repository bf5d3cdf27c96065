"""Who may call the A1111 routes. `--api-auth user:pass` puts HTTP Basic on every `/sdapi/v1` route (as A1111's
`--api-auth` does). The reseller-gateway mount `/v1/sdapi/v1` takes a bearer key (`[a1111] gateway_keys` /
SDGATE_GATEWAY_KEYS) when keys are configured, and otherwise the same Basic auth, so the second mount is never
a way around the first. With neither configured the routes are open, as A1111's are."""

from __future__ import annotations

import os

from ...config import Config
from ...images import decode_base64
from ...keys import secret_equal
from ..base import Call
from .errors import Unauthorized

PREFIX = "/sdapi/v1"
GATEWAY_PREFIX = "/v1/sdapi/v1"


def gateway_keys(config: Config) -> list[str]:
    """Bearer keys for the gateway prefix: `[a1111] gateway_keys = [...]` and/or env SDGATE_GATEWAY_KEYS."""
    section = (config.raw or {}).get("a1111", {}) or {}
    keys = [str(k) for k in section.get("gateway_keys", []) or [] if str(k)]
    keys += [k.strip() for k in os.environ.get("SDGATE_GATEWAY_KEYS", "").split(",") if k.strip()]
    return keys


def _equal(a: str, b: str) -> bool:
    return secret_equal(a, b)  # constant time, length included


def _scheme(call: Call) -> tuple[str, str]:
    scheme, _, param = (call.header("authorization") or "").partition(" ")
    return scheme, param.strip()


def check_basic(call: Call, credentials: list[tuple[str, str]]) -> str:
    """The user of a valid `Authorization: Basic` header (every pair compared, in constant time)."""
    scheme, param = _scheme(call)
    if scheme.lower() != "basic":
        raise Unauthorized("Not authenticated", "Basic")
    try:
        user, separator, password = decode_base64(param).decode("ascii").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("Not authenticated", "Basic") from None
    if not separator:
        raise Unauthorized("Not authenticated", "Basic")
    ok = False
    for known_user, known_password in credentials:
        ok |= _equal(user, known_user) & _equal(password, known_password)
    if not ok:
        raise Unauthorized("Incorrect username or password", "Basic")
    return user


def check_bearer(call: Call, keys: list[str]) -> str:
    scheme, token = _scheme(call)
    if not scheme or not token or scheme.lower() != "bearer":
        raise Unauthorized("Not authenticated", "Bearer")
    ok = False
    for key in keys:
        ok |= _equal(token, key)
    if not ok:
        raise Unauthorized("Invalid API key", "Bearer")
    return "gateway key"


def authorize(config: Config, call: Call) -> str | None:
    """The caller's identity (a user name, "gateway key"), None where the route is open; raises Unauthorized
    (401 with `WWW-Authenticate`). A UI tab's call passed the UI's own login."""
    if call.ui:
        return None
    if call.path == GATEWAY_PREFIX or call.path.startswith(GATEWAY_PREFIX + "/"):
        keys = gateway_keys(config)
        if keys:
            return check_bearer(call, keys)
    if config.api_auth:
        return check_basic(call, list(config.api_auth))
    return None

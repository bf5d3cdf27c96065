"""API keys for the hosted-API styles (Stability, OpenAI: bearer header; ModelsLab: `key` in the body).

Keys come from the TOML config (`[keys] stability = ["..."]`, `modelslab = ["..."]`, `openai = ["..."]`) or the
environment (`SDGATE_STABILITY_KEYS`, `SDGATE_MODELSLAB_KEYS`, `SDGATE_OPENAI_KEYS`, comma separated). With no key
configured for a style, that style is open to loopback clients only: a server started with --listen must not hand
a GPU to the LAN (or a share link) without anyone having chosen to. Keys are compared in constant time and never
logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import secrets
from typing import Mapping

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
        # check every key (no early exit) so timing says nothing about which one nearly matched
        return sum(secret_equal(presented, k) for k in keys) > 0


def secret_equal(presented: str, known: str) -> bool:
    """A credential check in constant time, its length included (both sides are hashed first)."""
    return secrets.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(known.encode()).digest())


def bearer_token(authorization: str | None) -> str | None:
    """'Bearer sk-abc' → 'sk-abc'; a bare value is taken as is (some clients omit the scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else authorization.strip()


# ------------------------------------------------------------------------------------------------ owners
# Who a job belongs to, for the fair queue, per-owner caps and rate limits, and who may look at or cancel it.
# Owners are opaque strings with a kind prefix, so no caller can name himself into another kind's identity:
# "key:<hash>" (an API key, never stored or shown itself), "user:<name>" (Basic auth or the UI login),
# "ip:<address>" (anyone else), "session:<id>" (a UI browser session without a login).


def owner_of_key(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep and user else None


def basic_user(authorization: str | None, users: list[tuple[str, str]] | None) -> str | None:
    """The user of an `Authorization: Basic` header whose password `users` accepts (every pair compared in
    constant time), else None."""
    basic = basic_credentials(authorization)
    if basic is None:
        return None
    user, password = basic
    ok = sum(secret_equal(user, u) & secret_equal(password, p) for u, p in users or []) > 0
    return user if ok else None


def request_owner(headers: Mapping[str, str], client_host: str | None, query_key: str | None = None,
                  users: list[tuple[str, str]] | None = None) -> str:
    """The owner of an HTTP request: its Basic-auth user when `users` (`--api-auth`) accepts the password, its API
    key (bearer, `x-api-key`, a `key` query parameter, or a Basic credential nobody checks here: it is a key then,
    so nobody becomes "user:alice" by writing her name), else its address. `headers` have lower-case names."""
    authorization = headers.get("authorization")
    if basic_credentials(authorization) is not None:
        user = basic_user(authorization, users)
        return "user:" + user if user is not None else owner_of_key(authorization.strip())
    key = bearer_token(authorization) or headers.get("x-api-key") or query_key
    if key:
        return owner_of_key(key)
    return "ip:" + (client_host or "unknown")


def is_admin(owner: str | None, admins: list[str]) -> bool:
    """`[queue] admins` names users ("alice") or owners as written ("key:…"): they may steer every job."""
    if not owner or not admins:
        return False
    name = owner.removeprefix("user:") if owner.startswith("user:") else owner
    return sum(secret_equal(name, a) for a in admins) > 0

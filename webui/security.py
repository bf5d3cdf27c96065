"""What keeps a server on the LAN (`--listen`) or a public share link (`--share`) safe: the startup warnings for
every surface left open, the UI login checked in constant time, CORS closed unless origins are listed, and
`Guard`, which tells a local user from a caller who reached us through a proxy or the share tunnel and keeps the
outputs folder off Gradio's file route (the UI shows its images through Gradio's cache, never by their path)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse

from backends.config import Config
from backends.keys import STYLES, ApiKeys, is_loopback, secret_equal

# ------------------------------------------------------------------------------------------ startup warnings


def open_surfaces(config: Config, keys: ApiKeys) -> list[str]:
    """One warning per surface that others can reach without credentials, when the server is reachable beyond
    this machine (a non-loopback address such as --listen's 0.0.0.0, or --share); nothing on loopback alone."""
    lan = not is_loopback(config.host)
    if not lan and not config.share:
        return []
    where = " and ".join(w for w, on in (("on the network", lan), ("through the public share link", config.share))
                         if on)
    warnings = []
    if config.share:
        warnings.append("the share link is public: anyone who has the URL reaches this server, UI and APIs")
    if not config.auth:
        warnings.append(f"the web UI is open to anyone {where}: no --auth (set --auth user:pass)")
    if not config.api_auth:
        warnings.append(f"the A1111 API (/sdapi/v1) is open to anyone {where}: no --api-auth "
                        "(set --api-auth user:pass)")
    for section, env in STYLES.items():
        if not keys.configured(section):
            warnings.append(f"no {section} API keys configured: the {section} routes answer this machine's own "
                            f"clients only (set [keys] {section} in the config or {env})")
    if "*" in config.security.cors_allow_origins:
        warnings.append("CORS allows every origin (*): any web page can call the APIs from its visitors' browsers")
    return warnings


# ------------------------------------------------------------------------------------------ the UI login


def ui_auth(credentials: list[tuple[str, str]]) -> Callable[[str, str], bool] | None:
    """Gradio's login check for `--auth`: every pair compared in constant time, user and password alike (given
    a list, Gradio looks the user name up in a dict first, which times out which names exist)."""
    if not credentials:
        return None
    pairs = list(credentials)

    def check(username: str, password: str) -> bool:
        ok = False
        for user, known in pairs:
            ok |= secret_equal(username, user) & secret_equal(password, known)
        return ok

    return check


# ------------------------------------------------------------------------------------------ CORS


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Cross-origin browser calls only from `origins` (`--cors-allow-origins`, `[security] cors_allow_origins`):
    none by default. Starlette's own middleware on the parent app also makes Gradio's stand down (Gradio's
    reflects any origin, with credentials, whenever the Host is not localhost: on the LAN and the share link)."""
    origins = [o.rstrip("/") for o in origins]
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                       allow_credentials=bool(origins) and "*" not in origins)


def parse_origins(text: str | None, flag: str = "--cors-allow-origins") -> list[str]:
    """'https://a.example,http://b:8080' → the list; each an origin (scheme://host[:port]) or '*'."""
    from backends.config import ConfigError

    origins = []
    for item in (text or "").split(","):
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"{flag} expects origins like https://app.example[:port], got {origin!r}")
        origins.append(origin)
    return origins


# ------------------------------------------------------------------------------------------ the guard

PROXIED = "proxied"  # the client address given to a caller that came through a local proxy or the share tunnel
_GRADIO_FILE = re.compile(r"^/gradio_api/file(?:=|/)(.+)$")
_PAGES = ("/", "/gradio_api/runs", "/gradio_api/runs/")  # where Gradio renders its page (or its login page)
# Gradio's page embeds the API description (every endpoint, its parameters, the model and gateway names in their
# choices) even on the login page; `/gradio_api/info` itself needs the login. (Its JSON escapes "<".)
_API_INFO = re.compile(rb"(window\.gradio_api_info = )(.*?)(;</script>)", re.DOTALL)
_NO_API_INFO = b'{"named_endpoints":{},"unnamed_endpoints":{}}'


def _host_of(header: str | None) -> str | None:
    if not header:
        return None
    try:
        return urlsplit("//" + header).hostname
    except ValueError:
        return ""


def _loopback_ip(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.is_relative_to(root.resolve())
    except OSError:
        return False


class Guard:
    """ASGI middleware in front of the whole app (the APIs and the UI).

    - A caller whose connection comes from 127.0.0.1 but who asked for a Host that is not this machine came
      through a proxy or Gradio's share tunnel (whose traffic all arrives from loopback): it is not a local
      user, so the loopback-only rule of a style without keys does not let it in, and its owner is not
      "ip:127.0.0.1". Its address becomes `PROXIED` (uvicorn has already put a trusted proxy's
      X-Forwarded-For in its place when there was one).
    - Gradio's file route serves everything under `allowed_paths`, which must hold the outputs folder (the UI
      returns saved images, and Gradio copies them into its cache to serve them). Fetched by its path, an
      output would skip History's per-user view and the OpenAI/ModelsLab URL expiry: 404.
    - With `--auth`, the login page goes out without the API description Gradio puts in every page."""

    def __init__(self, app: Any, private_dirs: Callable[[], list[Path]], ui_login: bool = False):
        self.app = app
        self.private_dirs = private_dirs
        self.ui_login = ui_login

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client and _loopback_ip(client[0]):
                headers = dict(scope.get("headers") or [])
                host = _host_of(headers.get(b"host", b"").decode("latin-1"))
                if host is not None and not is_loopback(host):
                    scope = {**scope, "client": (PROXIED, client[1])}
            if scope["type"] == "http" and self._private_file(scope.get("path", "")):
                await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
                return
            if self.ui_login and scope["type"] == "http" and scope["method"] in ("GET", "HEAD") \
                    and scope.get("path") in _PAGES:
                await self._login_page(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _login_page(self, scope, receive, send) -> None:
        """The page, uncompressed and held until complete; when it is the login page (`auth_required`), with
        an empty API description."""
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"accept-encoding"]
        start: dict = {}
        body = bytearray()

        async def hold(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            data = bytes(body)
            if b'"auth_required":true' in data:
                data = _API_INFO.sub(lambda m: m.group(1) + _NO_API_INFO + m.group(3), data, count=1)
            fields = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            if scope["method"] != "HEAD":
                fields.append((b"content-length", str(len(data)).encode()))
            else:
                fields += [(k, v) for k, v in start.get("headers", []) if k.lower() == b"content-length"]
            await send({**start, "headers": fields})
            await send({"type": "http.response.body", "body": data if scope["method"] != "HEAD" else b""})

        await self.app({**scope, "headers": headers}, receive, hold)

    def _private_file(self, path: str) -> bool:
        found = _GRADIO_FILE.match(path)
        if not found:
            return False
        try:
            target = Path(os.path.abspath(found.group(1))).resolve()
        except (OSError, ValueError):
            return False
        from gradio.utils import get_cache_folder, get_upload_folder

        if any(_inside(target, Path(d)) for d in (get_cache_folder(), get_upload_folder())):
            return False  # what the UI serves: Gradio's own copies, even when they lie under outputs
        return any(_inside(target, Path(d)) for d in self.private_dirs())


def private_dirs(app: FastAPI, config: Config) -> Callable[[], list[Path]]:
    """The folders Gradio's file route must not serve by path: the outputs, and the UI's result files."""

    def dirs() -> list[Path]:
        found = [Path(config.outputs_dir)]
        files = getattr(app.state, "ui_files", None)
        if files is not None:
            found.append(Path(files.root))
        return found

    return dirs

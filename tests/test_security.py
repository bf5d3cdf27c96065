"""Security that holds on the LAN and on a public share link: the startup warnings, `--auth` over the page, the
Gradio API and its file routes, CORS closed by default, History per user, constant-time credential checks, and no
client-given name (model, LoRA, style, output file) reaching a path outside its folder. Real servers (the demo
tiny models) through httpx and gradio_client; tiny images, one or two steps."""

from __future__ import annotations

import base64
import http.client
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError
from PIL import Image
from starlette.routing import Mount

from backends import outputs
from backends.config import Config, ConfigError, Security
from backends.keys import ApiKeys, secret_equal
from live import start_live_server
from webui import server as webui_server
from webui.security import open_surfaces, parse_origins, ui_auth
from webui.tabs.history import saved_images, visible_images

ROOT = Path(__file__).resolve().parents[1]
FAST = {"steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}
EVIL = "http://evil.example"
NO_KEYS = ApiKeys({}, environ={})
ALL_KEYS = ApiKeys({"keys": {"stability": ["s"], "modelslab": ["m"], "openai": ["o"]}}, environ={})


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def raw_get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET exactly `path` (httpx would normalise `..` segments away before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def models(tiny_models_dir) -> Path:
    return tiny_models_dir  # conftest's session-wide tiny models (the servers below share them, read-only)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, models):
    """No credentials at all, as `--listen` with no flags would serve."""
    srv = start_live_server(tmp_path_factory.mktemp("open"), models_dir=models)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, models):
    """`--auth u:p` for the UI, `--api-auth` alice and bob for the A1111 API."""
    srv = start_live_server(tmp_path_factory.mktemp("auth"), models_dir=models, auth=[("u", "p")],
                            api_auth=[("alice", "a"), ("bob", "b")])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory, models):
    srv = start_live_server(tmp_path_factory.mktemp("cors"), models_dir=models,
                            security=Security(cors_allow_origins=["https://app.example"]))
    yield srv
    srv.stop()


# ----------------------------------------------------------------------------------------- startup warnings


def test_no_warning_on_loopback():
    assert open_surfaces(Config(host="127.0.0.1"), NO_KEYS) == []


def test_listen_warns_once_per_open_surface():
    warnings = open_surfaces(Config(host="0.0.0.0"), NO_KEYS)
    assert len(warnings) == 5, warnings  # the UI, the A1111 API, and each hosted style's keys
    assert any("web UI is open" in w and "--auth" in w for w in warnings)
    assert any("A1111 API (/sdapi/v1) is open" in w and "--api-auth" in w for w in warnings)
    for section in ("stability", "modelslab", "openai"):
        assert any(f"no {section} API keys" in w for w in warnings)
    assert all("on the network" in w for w in warnings[:2]) and not any("share link" in w for w in warnings)


def test_share_is_public_even_on_loopback():
    warnings = open_surfaces(Config(host="127.0.0.1", share=True), NO_KEYS)
    assert warnings[0].startswith("the share link is public")
    assert any("web UI is open to anyone through the public share link" in w for w in warnings)
    assert sum("API keys" in w for w in warnings) == 3


def test_credentials_close_every_surface_but_the_share_link():
    cfg = Config(host="0.0.0.0", share=True, auth=[("u", "p")], api_auth=[("a", "b")])
    assert open_surfaces(cfg, ALL_KEYS) == [
        "the share link is public: anyone who has the URL reaches this server, UI and APIs"]
    cfg.security.cors_allow_origins = ["*"]
    assert any("CORS allows every origin" in w for w in open_surfaces(cfg, ALL_KEYS))


def test_announce_prints_a_loud_line_per_surface(capsys):
    service = types.SimpleNamespace(config=Config(host="0.0.0.0", port=7861), keys=NO_KEYS, demo=False)
    webui_server._announce(types.SimpleNamespace(started=True, should_exit=False), service)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING: ")]
    assert len(lines) == 5, lines
    assert lines[0] == "WARNING: the web UI is open to anyone on the network: no --auth (set --auth user:pass)"


# ----------------------------------------------------------------------------------------- flags


def test_cors_flag_parses_origins():
    from launch import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--cors-allow-origins", "https://a.example, http://b:8080/"]))
    assert cfg.security.cors_allow_origins == ["https://a.example", "http://b:8080"]
    assert config_from_args(build_parser().parse_args([])).security.cors_allow_origins == []
    with pytest.raises(ConfigError):
        parse_origins("a.example/path")


def test_bad_cors_flag_gives_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--cors-allow-origins", "ftp://x/y"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cors-allow-origins expects origins" in lines[0], proc.stderr


# ----------------------------------------------------------------------------------------- credentials


def test_ui_login_check_is_constant_time_over_every_pair():
    check = ui_auth([("u", "p"), ("v", "q")])
    assert check("u", "p") and check("v", "q")
    assert not check("u", "q") and not check("nobody", "p") and not check("", "") and not check("u", "p" * 500)
    assert ui_auth([]) is None
    assert secret_equal("key", "key") and not secret_equal("key", "key2")


def test_auth_refuses_page_api_and_files_before_login(auth_server):
    with httpx.Client(base_url=auth_server.url, timeout=60, follow_redirects=False) as c:
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "prompt": "a", "save_images": True}, headers=basic("alice", "a"))
        assert r.status_code == 200, r.text
        saved = sorted(auth_server.outputs.rglob("*.png"))[0]
        page = c.get("/")
        assert page.status_code == 200 and "a1111_txt2img" not in page.text  # the login page, no app config
        for method, path in [("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/gradio_api/openapi.json"),
                             ("POST", "/gradio_api/call/a1111_txt2img"), ("POST", "/gradio_api/queue/join"),
                             ("GET", "/gradio_api/queue/data?session_hash=x"), ("POST", "/gradio_api/upload"),
                             ("GET", f"/gradio_api/file={saved}"), ("GET", f"/gradio_api/file/{saved}")]:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert r.status_code in (401, 403, 404), (path, r.status_code, r.text[:200])
        assert c.get(f"/file={saved}").status_code == 404  # no Gradio 3 file route
        assert c.post("/login", data={"username": "u", "password": "wrong"}).status_code == 400
        assert c.post("/login", data={"username": "nobody", "password": "p"}).status_code == 400
        assert c.post("/login", data={"username": "u", "password": "p"}).status_code == 200
        assert c.get("/config").status_code == 200 and c.get("/gradio_api/info").status_code == 200
        # logged in or not, an output is never served by its path (History shows each person their own)
        assert c.get(f"/gradio_api/file={saved}").status_code == 404
    with pytest.raises(AuthenticationError):
        Client(auth_server.url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(auth_server.url, auth=("u", "nope"), verbose=False)


def test_api_auth_is_checked_in_constant_time_and_refuses_wrong_pairs(auth_server):
    with httpx.Client(base_url=auth_server.url, timeout=60) as c:
        assert c.get("/sdapi/v1/options").status_code == 401
        assert c.get("/sdapi/v1/options", headers=basic("alice", "b")).status_code == 401
        assert c.get("/sdapi/v1/options", headers=basic("carol", "a")).status_code == 401
        assert c.get("/sdapi/v1/options", headers=basic("bob", "b")).status_code == 200


# ----------------------------------------------------------------------------------------- History per user


def history_load(server):
    """The History tab's load handler, as gradio calls it (the UI marks it private: no API client reaches it)."""
    mount = next(r for r in server.app.routes if isinstance(r, Mount) and r.path == "")
    blocks = mount.app.get_blocks()
    return next(f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == "load"
                and "history" in f.fn.__qualname__)


def test_history_shows_each_user_their_own(auth_server):
    with httpx.Client(base_url=auth_server.url + "/sdapi/v1", timeout=120) as c:
        for user, password in (("alice", "a"), ("bob", "b")):
            r = c.post("/txt2img", json={**FAST, "prompt": "a cat", "save_images": True, "seed": 7},
                       headers=basic(user, password))
            assert r.status_code == 200, r.text
    out = auth_server.outputs
    files = saved_images(out)
    tags = {outputs.stored_owner(p) for p in files}
    assert outputs.owner_tag(out, "user:alice") in tags and outputs.owner_tag(out, "user:bob") in tags
    for p in files:  # the owner is a keyed hash: neither the name nor a plain hash of it is in the file
        with Image.open(p) as image:
            assert "alice" not in str(image.info) and "bob" not in str(image.info)
    alice = visible_images(files, out, "user:alice", shared=False)
    bob = visible_images(files, out, "user:bob", shared=False)
    assert alice and bob and not set(alice) & set(bob)
    assert visible_images(files, out, "ip:127.0.0.1", shared=False) == []
    assert visible_images(files, out, "user:alice", shared=True) == files

    load = history_load(auth_server)
    shown, _, summary, _ = load(1, gr.Request(username="alice"))
    assert shown == [str(p) for p in alice] and f"{len(alice)} image" in summary
    shown, _, _, _ = load(1, gr.Request(username="carol"))
    assert shown == []
    auth_server.service.config.security.shared_history = True
    try:
        assert len(load(1, gr.Request(username="carol"))[0]) == len(files)
    finally:
        auth_server.service.config.security.shared_history = False


def test_images_without_an_owner_are_shown_only_when_history_is_shared(tmp_path):
    old = outputs.save_image(Image.new("RGB", (8, 8)), tmp_path, "txt2img-images", 1, "old")
    mine = outputs.save_image(Image.new("RGB", (8, 8)), tmp_path, "txt2img-images", 2, "mine", owner="ip:10.0.0.2")
    files = saved_images(tmp_path)
    assert visible_images(files, tmp_path, "ip:10.0.0.2", shared=False) == [mine]
    assert set(visible_images(files, tmp_path, "ip:10.0.0.2", shared=True)) == {old, mine}
    assert outputs.owner_tag(tmp_path, "ip:10.0.0.2") != outputs.owner_tag(tmp_path / "other", "ip:10.0.0.2")


def test_ui_generation_is_in_its_users_history(auth_server):
    client = Client(auth_server.url, auth=("u", "p"), verbose=False)
    try:
        _, _, info, _ = client.predict(prompt="mine", steps=1, width=64, height=64, seed=4321,
                                       api_name="/a1111_txt2img")
    finally:
        client.close()
    assert "Seed: 4321" in info
    (saved,) = [p for p in saved_images(auth_server.outputs) if p.name.endswith("-4321.png")]
    assert outputs.stored_owner(saved) == outputs.owner_tag(auth_server.outputs, "user:u")
    shown, _, _, _ = history_load(auth_server)(1, gr.Request(username="u"))
    assert shown == [str(saved)]


# ----------------------------------------------------------------------------------------- CORS


@pytest.mark.parametrize("path", ["/", "/config", "/gradio_api/info", "/sdapi/v1/options", "/health",
                                  "/v1/models", "/v2beta/stable-image/generate/core"])
def test_cors_is_closed_by_default(open_server, path):
    with httpx.Client(base_url=open_server.url, timeout=30) as c:
        # on the LAN (a Host that is not localhost) Gradio used to echo any Origin, with credentials
        for host in (None, f"192.168.1.5:{open_server.port}"):
            headers = {"Origin": EVIL, **({"Host": host} if host else {})}
            r = c.get(path, headers=headers)
            assert "access-control-allow-origin" not in r.headers, (path, host, dict(r.headers))
            assert "access-control-allow-credentials" not in r.headers
            pre = c.options(path, headers={**headers, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type"})
            assert "access-control-allow-origin" not in pre.headers, (path, host, pre.status_code, dict(pre.headers))


def test_cors_opens_to_the_listed_origins_only(cors_server):
    with httpx.Client(base_url=cors_server.url, timeout=30) as c:
        for path in ("/sdapi/v1/options", "/gradio_api/info", "/v1/models"):
            pre = c.options(path, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
            r = c.get(path, headers={"Origin": "https://app.example"})
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            r = c.get(path, headers={"Origin": EVIL, "Host": f"192.168.1.5:{cors_server.port}"})
            assert "access-control-allow-origin" not in r.headers


# ----------------------------------------------------------------------------------------- proxied callers


def test_a_caller_through_the_share_tunnel_is_not_local(open_server):
    """Gradio's share tunnel (and any local proxy) connects from 127.0.0.1: the Host it asked for says it is not
    a local user, so a style without keys refuses it, as it refuses the LAN."""
    with httpx.Client(base_url=open_server.url, timeout=30) as c:
        assert c.get("/v1/models").status_code == 200  # this machine's own client
        assert c.get("/v1/models", headers={"Host": "abc123.gradio.live"}).status_code == 401
        assert c.get("/v1/models", headers={"Host": "abc123.gradio.live", "X-Forwarded-For": "127.0.0.1"}
                     ).status_code == 401
        assert c.get("/v1/models", headers={"Host": "192.168.1.5:7860"}).status_code == 401
        assert c.get("/v1/models", headers={"Host": f"localhost:{open_server.port}"}).status_code == 200


# ----------------------------------------------------------------------------------------- paths


def test_outputs_are_not_served_by_their_path(open_server):
    with httpx.Client(base_url=open_server.url, timeout=120) as c:
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "prompt": "x", "save_images": True})
        assert r.status_code == 200, r.text
        saved = sorted(open_server.outputs.rglob("*.png"))[0]
        rel = saved.relative_to(open_server.outputs)
        for path in (f"/gradio_api/file={saved}", f"/gradio_api/file/{saved}",
                     f"/gradio_api/file={open_server.outputs}/{outputs.SECRET_NAME}",
                     f"/gradio_api/file={open_server.outputs}/../{open_server.outputs.name}/{rel}"):
            assert c.get(path).status_code == 404, path
        assert c.get(f"/gradio_api/file={ROOT / 'pyproject.toml'}").status_code == 403  # Gradio's own refusal


def test_lora_model_and_style_names_stay_in_their_folders(open_server):
    with httpx.Client(base_url=open_server.url + "/sdapi/v1", timeout=120) as c:
        r = c.post("/txt2img", json={**FAST, "prompt": "a <lora:../../../etc/passwd:1>"})
        assert r.status_code == 404 and r.json()["error"] == "LoraNotFound", r.text
        r = c.post("/txt2img", json={**FAST, "prompt": "a <lora:/etc/passwd:1>"})
        assert r.status_code == 404, r.text
        r = c.post("/txt2img", json={**FAST, "prompt": "a", "override_settings": {"sd_model_checkpoint": "../../x"}})
        assert r.status_code == 404 and r.json()["error"] == "ModelNotFound", r.text
        for name in ("../../pyproject.toml", "/etc/passwd", str(ROOT / "pyproject.toml")):
            r = c.post("/options", json={"sd_model_checkpoint": name})
            assert r.status_code == 404, (name, r.text)
        r = c.post("/txt2img", json={**FAST, "prompt": "plain", "styles": ["../../styles.json"]})
        assert r.status_code == 200 and r.json()["parameters"]["prompt"] == "plain"  # unknown styles are skipped


@pytest.mark.parametrize("path", [
    "/generations/../../pyproject.toml",
    "/generations/%2e%2e/%2e%2e/pyproject.toml",
    "/generations/..%2f..%2fpyproject.toml",
    "/generations/%2e%2e",
    "/generations/..%5c..%5cpyproject.toml",
    "/generations/openai/../../../pyproject.toml",
    "/generations/openai/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/generations/openai/%2e%2e",
    "/generations/openai/..%5cpyproject.toml",
])
def test_generation_files_refuse_names_outside_their_folder(open_server, path):
    status, body = raw_get(open_server.port, path)
    assert status == 404, (path, status, body[:200])
    assert b"[project]" not in body


def test_output_file_names_cannot_leave_the_folder(tmp_path):
    path = outputs.save_bytes(b"x", tmp_path, "txt2img-images", "../../../evil", "png/../x")
    assert path.parent.parent.parent == tmp_path and "/" not in path.name and ".." not in path.name
    with pytest.raises(ValueError):
        outputs.save_bytes(b"x", tmp_path, "../../elsewhere", 1)


def test_png_info_and_history_refuse_paths_outside_outputs(tmp_path):
    from webui.tabs.history import readable

    inside = outputs.save_image(Image.new("RGB", (8, 8)), tmp_path / "out", "txt2img-images", 1)
    assert readable(inside, tmp_path / "out")
    assert not readable(ROOT / "pyproject.toml", tmp_path / "out")
    assert not readable(str(tmp_path / "out" / ".." / ".." / "etc" / "passwd"), tmp_path / "out")
    link = tmp_path / "out" / "txt2img-images" / "link.png"
    link.symlink_to(ROOT / "pyproject.toml")
    assert not readable(link, tmp_path / "out")

#!/usr/bin/env python3
"""Start sdgate: the web UI and every API style on one port.

    python launch.py --demo                   # everything on the built-in tiny model (no download)
    python launch.py --model path/to/model.safetensors --listen
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Quiet, offline-friendly defaults before the heavy imports read them.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line, not a usage dump, and exit code 2 (as argparse's own)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="launch.py", description="sdgate: text-to-image server and web UI")
    p.add_argument("--port", type=port_number, default=None, help="port for the UI and the APIs (default 7860)")
    p.add_argument("--server-name", metavar="HOST", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--listen", action="store_true", help="bind 0.0.0.0 so the LAN can reach the server")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs internet)")
    p.add_argument("--model", help="Hugging Face repo id, diffusers folder, or .safetensors/.ckpt file")
    p.add_argument("--models-dir", type=Path, default=None, help="A1111-style models folder (default models/)")
    p.add_argument("--outputs-dir", type=Path, default=None, help="where images are saved (default outputs/)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default=None)
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file: models, gateways, keys, limits")
    p.add_argument("--api-auth", metavar="USER:PASS[,USER:PASS]", help="HTTP Basic auth for the /sdapi routes")
    p.add_argument("--auth", metavar="USER:PASS[,USER:PASS]", help="login for the web UI")
    p.add_argument("--cors-allow-origins", metavar="ORIGIN[,ORIGIN]",
                   help="web pages (https://app.example) allowed to call the server from a browser (default: none)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu-engine", choices=["torch", "openvino"], default=None,
                   help="what runs the UNet and VAE on a CPU (default torch; openvino converts each model once)")
    p.add_argument("--compile", action="store_true",
                   help="GPU: torch.compile the UNet (the first job of each size warms it up)")
    p.add_argument("--offload", action="store_true",
                   help="GPU: keep each model part on the GPU only while it runs (small-memory GPUs)")
    p.add_argument("--demo", action="store_true", help="serve the built-in tiny random-weight models")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the engine as Ray Serve replicas ([ray] in --config): on the cluster at ADDRESS "
                        "(e.g. auto, 10.0.0.5:6379), or with no ADDRESS on a Ray instance started here "
                        "(needs pip install -e '.[ray]')")
    return p


def config_from_args(args: argparse.Namespace):
    from backends.config import Config, ConfigError, parse_credentials

    cfg = Config.from_toml(args.config) if args.config else Config()
    if args.port is not None:
        cfg.port = args.port
    if args.server_name:
        cfg.host = args.server_name
    if args.listen:
        cfg.host = "0.0.0.0"
    cfg.share = cfg.share or args.share
    cfg.compile = cfg.compile or args.compile
    cfg.offload = cfg.offload or args.offload
    for flag in ("model", "models_dir", "outputs_dir", "device", "dtype", "threads", "cpu_engine"):
        if getattr(args, flag) is not None:
            setattr(cfg, flag, getattr(args, flag))
    if args.api_auth:
        cfg.api_auth = parse_credentials(args.api_auth, "--api-auth")
    if args.auth:
        cfg.auth = parse_credentials(args.auth, "--auth")
    if args.cors_allow_origins:
        from webui.security import parse_origins

        cfg.security.cors_allow_origins = parse_origins(args.cors_allow_origins)
    cfg.demo = cfg.demo or args.demo
    if args.ray is not None:
        cfg.ray.enabled = True
        cfg.ray.address = args.ray or cfg.ray.address
    if cfg.ray.enabled:
        import importlib.util

        cfg.ray.counts()  # a bad replica range is one line, before any model or Ray work

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--ray needs Ray Serve: pip install -e '.[ray]'")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from backends.config import ConfigError
    from backends.job import SdgateError

    try:
        cfg = config_from_args(args)
        from backends.assembly import create_service

        service = create_service(cfg)
    except (ConfigError, SdgateError) as e:
        parser.error(str(e))
    try:
        default = service.models.resolve(None)
    except SdgateError as e:
        service.close()
        parser.error(str(e))
    logging.getLogger("sdgate").info("default model: %s (%s)", default.title, default.source)

    from webui.app import create_app
    from webui.server import serve

    app = create_app(service)
    try:
        serve(app, service)
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

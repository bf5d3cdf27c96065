"""Server configuration: command-line flags over a TOML file over defaults."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



@dataclass
class Limits:
    """Bounds a single job may ask for; dialects enforce their own documented limits first."""

    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_batch_size: int = 16
    max_images: int = 64
    max_pixels: int = 64 * 1024 * 1024  # width × height × images of one job
    max_prompt_length: int = 32000  # characters in a prompt or negative prompt (OpenAI's gpt-image allows 32000)
    max_upload_bytes: int = 50 * 1024 * 1024  # one uploaded (or base64) image, encoded
    max_image_pixels: int = 4096 * 4096  # one uploaded image, decoded (a PNG bomb stops here)
    max_body_bytes: int = 256 * 1024 * 1024  # one HTTP request body


@dataclass
class Serving:
    """How the one device is shared (`[queue]`): bounds, fairness, batching, rate limits, who may steer all jobs."""

    max_pending_per_owner: int = 16  # one owner's waiting jobs beyond this get the style's busy answer
    max_batch: int = 0  # images in one batched pipeline call; 0: chosen per device (backends/queue.py)
    gather_ms: int = 0  # wait this long for batch-mates when the device frees up (0: batch what is waiting)
    rate_limit: str | None = None  # per owner, in the `limits` library's syntax, e.g. "60/minute"
    admins: list[str] = field(default_factory=list)  # owners (users, key owners) who may steer every job


@dataclass
class Security:
    """`[security]`: what a server on the LAN or a public link lets through."""

    cors_allow_origins: list[str] = field(default_factory=list)  # none: cross-origin browser calls are refused
    shared_history: bool = False  # the UI's History shows everyone's images (else each user their own)


@dataclass
class Features:
    """`[features]`: the models and settings of the engine's optional capabilities (backends/local/features/).
    A model path left empty is looked for under models_dir (`safety-checker/`, `translator/`)."""

    safety_checker: str | None = None  # a folder with safety_checker/ + feature_extractor/ (diffusers' layout)
    translator: str | None = None  # a folder with an AutoModelForSeq2SeqLM and its tokenizer (e.g. mBART-50 → en)
    sag_scale: float = 0.75  # self-attention guidance scale (diffusers' default)
    tome_ratio: float = 0.5  # tomesd: the share of tokens merged
    safety_styles: list[str] = field(default_factory=lambda: ["stability_v1", "stability_v2"])  # always checked

    def model_path(self, name: str, models_dir: Path) -> Path | None:
        """The configured folder of `name` ("safety_checker" | "translator"), else its default under models_dir
        when that exists; None: not installed."""
        configured = getattr(self, name)
        if configured:
            return Path(configured)
        default = Path(models_dir) / name.replace("_", "-")
        return default if default.is_dir() else None


@dataclass
class Cluster:
    """`[ray]` (and `launch.py --ray [ADDRESS]`): the engine as a Ray Serve deployment (backends/cluster/); this
    process stays the one ingress that owns job ids, owners, fairness, history and outputs."""

    enabled: bool = False  # --ray, or `enabled = true` here
    address: str | None = None  # a running cluster ("auto", "host:6379", "ray://host:10001"); None: start one here
    replicas: int = 1  # a fixed number of engine replicas (ignored when min/max_replicas autoscale)
    min_replicas: int | None = None  # both set: Serve autoscales between them on the requests in flight
    max_replicas: int | None = None
    num_gpus: float | None = None  # per replica; None: 1 when the cluster has GPUs, else 0
    num_cpus: float = 1.0  # per replica (a CPU replica also runs this many torch threads)
    models_per_replica: int = 1  # pipelines one replica keeps loaded (Serve's multiplexing evicts the LRU one)
    models_dir: str | None = None  # where replicas find the models; None: this server's models_dir (same path)
    retries: int = 1  # a batch whose replica died is sent again this many times (0: it fails at once)
    start_timeout_s: float = 300  # the replicas must be up by then (a cluster without room for them: one line)

    @property
    def autoscales(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def counts(self) -> tuple[int, int]:
        """(min, max) replicas: a fixed number, or the autoscaling range."""
        if self.autoscales:
            low = self.min_replicas if self.min_replicas is not None else 1
            high = self.max_replicas if self.max_replicas is not None else max(low, self.replicas)
            if not 0 <= low <= high or high < 1:
                raise ConfigError(f"[ray] min_replicas {low} / max_replicas {high}: need 0 <= min <= max, max >= 1")
            return low, high
        if self.replicas < 1:
            raise ConfigError(f"[ray] replicas {self.replicas}: at least 1")
        return self.replicas, self.replicas


class ConfigError(ValueError):
    """A bad flag or config value; launch.py prints it on one line and exits with code 2."""


def parse_credentials(text: str | None, flag: str) -> list[tuple[str, str]]:
    """'user:pass[,user:pass]' → [(user, pass), ...]."""
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"{flag} expects user:pass[,user:pass], got {item.strip()!r}")
        pairs.append((user, password))
    return pairs


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    model: str | None = None  # default model: repo id, diffusers folder, single file or a name in models_dir
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    device: str = "auto"
    dtype: str = "auto"
    api_auth: list[tuple[str, str]] = field(default_factory=list)
    auth: list[tuple[str, str]] = field(default_factory=list)
    demo: bool = False
    model_aliases: dict[str, str] = field(default_factory=dict)  # e.g. Stability engine id → local model
    model_cache_size: int = 2
    max_pending: int = 64
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    cpu_engine: str = "torch"  # "torch" | "openvino": what runs the UNet and VAE on a CPU (backends/local/openvino.py)
    compile: bool = False  # GPU: torch.compile the UNet (warm-up per size bucket on first use)
    offload: bool = False  # GPU: keep each model part on the GPU only while it runs (small-memory GPUs)
    limits: Limits = field(default_factory=Limits)
    serving: Serving = field(default_factory=Serving)
    security: Security = field(default_factory=Security)
    features: Features = field(default_factory=Features)
    ray: Cluster = field(default_factory=Cluster)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole TOML, for sections other modules own

    def all_aliases(self) -> dict[str, str]:
        """Every model alias: the TOML's `[models.aliases]` and those set directly (`model_aliases`), which win.
        Targets may be local models or `gateway:<name>[/<model>]`."""
        return {**((self.raw.get("models") or {}).get("aliases") or {}), **self.model_aliases}

    @classmethod
    def from_toml(cls, path: Path) -> "Config":
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        cfg = cls(raw=data)
        server = data.get("server", {})
        models = data.get("models", {})
        limits = data.get("limits", {})
        try:
            for key in ("host", "port", "share", "device", "dtype", "threads", "max_pending", "cpu_engine", "compile",
                        "offload"):
                if key in server:
                    setattr(cfg, key, server[key])
            for key in ("models_dir", "outputs_dir"):
                if key in server:
                    setattr(cfg, key, Path(server[key]))
            cfg.model = models.get("default", cfg.model)
            cfg.model_cache_size = int(models.get("cache_size", cfg.model_cache_size))
            cfg.model_aliases = {str(k): str(v) for k, v in models.get("aliases", {}).items()}
            cfg.limits = Limits(**{k: int(v) for k, v in limits.items()})
            cfg.serving = _section(Serving, "queue", data)
            cfg.security = _section(Security, "security", data)
            cfg.features = _section(Features, "features", data)
            cfg.ray = _section(Cluster, "ray", data)
            cfg.api_auth = parse_credentials(server.get("api_auth"), "api_auth")
            cfg.auth = parse_credentials(server.get("auth"), "auth")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config file {path}: {e}") from None
        return cfg


def _section(cls, name: str, data: dict[str, Any]):
    """The TOML table `[name]` as a `cls`; a misspelt setting is named with the valid ones."""
    table = data.get(name, {})
    known = [f.name for f in fields(cls)]
    unknown = [key for key in table if key not in known]
    if unknown:
        raise ValueError(f"[{name}] has no setting {unknown[0]!r}; valid: {', '.join(known)}")
    return cls(**table)

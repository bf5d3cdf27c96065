"""The `[stability_v2]` config table: what the v2beta API leaves to the server (it has no `steps`, sampler or,
for core/ultra, guidance field), the body cap, the rate limit and the moderation rules."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ...config import ConfigError
from ...job import SdgateError
from ...samplers import resolve_sampler
from ...styles import styles_path
from .options import MAX_BODY

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """The `[stability_v2]` config table."""

    steps: int = 30
    turbo_steps: int = 4  # sd3.5-large-turbo / sd3.5-flash
    cfg_scale: float = 7.0  # core and ultra (sd3 has its own field and per-model defaults)
    sampler: str = "DPM++ 2M"
    schedule: Optional[str] = "Karras"
    size_scale: float = 1.0  # side factor on every output size (small test models); the ratio is kept
    jpeg_quality: int = 90
    max_body: int = MAX_BODY
    # requests per window and caller (0: off); the caller is then refused for rate_timeout_s. Window and
    # time-out count in whole seconds (the `limits` library's granularity): a fraction is rounded up.
    rate_limit: int = 150
    rate_window_s: float = 10.0
    rate_timeout_s: float = 60.0
    blocked_terms: list[str] = field(default_factory=list)  # prompt words refused with 403 content_moderation
    english_only: bool = False  # refuse prompts in other scripts with 422 invalid_language, as upstream does
    styles_file: Optional[str] = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "Settings":
        raw = raw or {}
        section = dict(raw.get("stability_v2", {}) or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            log.warning("[stability_v2]: unknown keys ignored: %s", ", ".join(unknown))
        settings = cls(**{k: v for k, v in section.items() if k in known})
        settings._coerce()
        settings.styles_file = str(styles_path(dict(raw), "stability_v2"))
        return settings

    def _coerce(self) -> None:
        """Numbers and flags from TOML or the environment as the right types; a bad value fails at startup."""
        for name, f in self.__dataclass_fields__.items():
            value, kind = getattr(self, name), type(f.default) if f.default is not None else None
            try:
                if kind is bool:
                    value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif kind in (int, float):
                    value = kind(value)
                elif name == "blocked_terms":
                    value = [str(t) for t in value]
            except (TypeError, ValueError):
                raise ConfigError(f"[stability_v2] {name}: bad value {value!r}") from None
            setattr(self, name, value)
        if self.steps < 1 or self.turbo_steps < 1 or self.size_scale <= 0 or self.max_body < 1:
            raise ConfigError("[stability_v2] steps, turbo_steps, size_scale and max_body must be positive")
        try:
            resolve_sampler(self.sampler, self.schedule)
        except SdgateError as e:
            raise ConfigError(f"[stability_v2] sampler/schedule: {e.message}") from None

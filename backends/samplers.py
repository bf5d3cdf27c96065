"""The one table that maps every sampler name a user can send to a diffusers scheduler.

Names come from three API styles and all resolve through the same tables:

* A1111 1.9/1.10 sampler names ("DPM++ 2M", "Euler a", ...), their aliases (k_dpmpp_2m, ...), and the legacy
  1.7/1.8 combined names ("DPM++ 2M Karras", "DPM2 a Karras", k_dpmpp_2m_ka) split into sampler + schedule type;
* the Stability v1 `sampler` enum (K_DPMPP_2M, K_EULER_ANCESTRAL, DDPM, ...);
* diffusers class names, as ModelsLab takes them ("UniPCMultistepScheduler", ...).

A1111 names are "k-diffusion style": they honour the A1111 schedule type (Automatic, Karras, Exponential, ...) and
space timesteps like k-diffusion (`timestep_spacing="linspace"`), whatever the model's scheduler config says.
Diffusers class names behave as in diffusers: the model's config plus the class's own defaults, with the schedule
type only switching sigma flags (ModelsLab's `use_karras_sigmas`). Timestep samplers (DDIM, PLMS, UniPC) ignore
the schedule type, as A1111 does.

Names diffusers cannot run (DPM fast, Restart, KarrasVeScheduler, ...) run their nearest equivalent, and the
SamplerChoice carries a note saying so, for the Result. See docs/reference/a1111_api.md §5 and
docs/reference/diffusers_offline.md §3 and §6.2. The rows are data in backends/sampler_table.py; building the
diffusers scheduler for a choice is the local engine's (backends/local/schedulers.py). Imports no diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .job import InvalidRequest, UnknownSampler
from .sampler_table import (
    ALIAS_SUFFIXES,
    AUTOMATIC,
    DIFFUSERS_SAMPLERS,
    ROWS,
    SAMPLER_LOOKUP,
    SCHEDULER_CLASSES,
    SCHEDULES,
    SCHEDULE_BY_NAME,
    SCHEDULE_LOOKUP,
    SCHEDULE_SUFFIXES,
    SIGMA_FLAGS,
    SIGMA_RESET,
    Sampler,
    Schedule,
    SchedulerClass,
    VALID_NAMES,
    name_key,
)

__all__ = [
    "SamplerChoice",
    "resolve_sampler",
    "valid_names",
    "diffusers_schedulers",
]


# ---------------------------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class SamplerChoice:
    """What a job runs: the row actually used, its schedule type, and the diffusers scheduler to build."""

    name: str  # the sampler name actually used ("DPM++ 2M" for a requested "DPM fast")
    schedule: str  # the schedule label actually used, "Automatic" resolved as A1111's infotext does
    scheduler_class: str
    config: dict[str, Any] = field(hash=False)  # kwargs for Cls.from_config(base_config, **config)
    notes: tuple[str, ...] = ()
    batch_invariant: bool = True  # False: never merge this job with others into one pipeline call
    requested: str = ""

    @property
    def key(self) -> tuple:
        """Hashable identity of the scheduler to build: jobs with equal keys can share one scheduler config."""
        return (self.scheduler_class, tuple(sorted((k, _hashable(v)) for k, v in self.config.items())))


def valid_names() -> list[str]:
    """Every sampler name we list: A1111 names, the Stability v1 enum, diffusers class names (aliases and legacy
    combined names are accepted too but not listed)."""
    return list(VALID_NAMES)


def _lookup_schedule(schedule: str | None) -> Schedule | None:
    """None for an absent/empty schedule; raises InvalidRequest for an unknown one."""
    if schedule is None or not str(schedule).strip():
        return None
    found = SCHEDULE_LOOKUP.get(name_key(str(schedule)))
    if found is None:
        valid = [s.name for s in SCHEDULES]
        raise InvalidRequest(
            f"unknown schedule type {schedule!r}; valid schedule types: {', '.join(valid)}",
            details={"schedule": schedule, "valid": valid},
        )
    return found


def _lookup_sampler(name: str) -> tuple[Sampler, Schedule | None] | None:
    """The row for `name`, and the schedule a legacy combined name carries ("DPM++ 2M Karras")."""
    key = name_key(name)
    row = SAMPLER_LOOKUP.get(key)
    if row is not None:
        return row, None
    # A1111 1.9+ strips a trailing " <schedule label|name|alias>" (sd_samplers.get_sampler_and_scheduler)
    for suffix, sched in SCHEDULE_SUFFIXES:
        if key.endswith(suffix):
            row = SAMPLER_LOOKUP.get(key[: -len(suffix)].rstrip())
            if row is not None:
                return row, sched
    for suffix, sched in ALIAS_SUFFIXES:
        if key.endswith(suffix):
            row = SAMPLER_LOOKUP.get(key[: -len(suffix)])
            if row is not None:
                return row, sched
    return None


def _supports(cls: SchedulerClass, flags: Mapping[str, Any]) -> bool:
    for k, v in flags.items():
        if k in SIGMA_FLAGS and v and not cls.sigma_flags:
            return False
        if k == "timestep_spacing" and not cls.spacing and cls.native_spacing != v:
            return False
    return True


def _schedule_flags(cls: SchedulerClass, sched: Schedule | None) -> Mapping[str, Any]:
    flags: dict[str, Any] = dict(SIGMA_RESET) if cls.sigma_flags else {}
    if sched is not None:
        for k, v in sched.flags.items():
            if k in SIGMA_FLAGS and not cls.sigma_flags:
                continue
            if k in ("timestep_spacing", "steps_offset") and not cls.spacing:
                continue  # _supports() already checked that the class spaces that way natively
            flags[k] = v
    return flags


def resolve_sampler(name: str | None, schedule: str | None = None) -> SamplerChoice:
    """Resolve a user's sampler name (+ optional A1111 schedule type) to the scheduler a job runs.

    The caller picks the default name (None/"" is not decided here). An explicit schedule type other than
    Automatic wins over one in a legacy combined name; "automatic"/None leaves the name's suffix in charge (A1111
    ignores the suffix once any scheduler field is sent; webuiapi always sends "automatic", so we are lenient).
    """
    requested = "" if name is None else str(name)
    found = _lookup_sampler(requested) if requested.strip() else None
    if found is None:
        raise UnknownSampler(requested, valid_names())
    row, suffix_sched = found
    explicit = _lookup_schedule(schedule)
    notes: list[str] = []

    sched = suffix_sched
    if explicit is not None and explicit is not AUTOMATIC:
        if suffix_sched is not None and suffix_sched is not AUTOMATIC and suffix_sched is not explicit:
            notes.append(
                f"schedule type {explicit.label!r} overrides {suffix_sched.label!r} from the sampler name"
            )
        sched = explicit
    if sched is AUTOMATIC:
        sched = None

    auto = SCHEDULE_BY_NAME[row.auto_schedule] if row.auto_schedule else None
    used = row
    while used.substitute:  # chains are one step long today; a loop keeps it honest
        used = ROWS[used.substitute]
    if used is not row:
        notes.append(f"{row.name!r} {row.reason}; ran {used.name}")
    cls = SCHEDULER_CLASSES[used.scheduler_class]

    if row.timesteps or used.timesteps:
        if sched is not None:
            notes.append(f"{used.name} is a timestep sampler and ignores the schedule type {sched.label!r}")
        sched = None
    else:
        if sched is None:
            sched = auto
        if sched is not None and sched.nearest:
            nearest = SCHEDULE_BY_NAME[sched.nearest]
            notes.append(
                f"schedule type {sched.label!r} has no diffusers equivalent; ran {nearest.label} ({sched.why})"
            )
            sched = nearest
        if sched is not None and not _supports(cls, sched.flags):
            fallback = auto if auto is not None and _supports(cls, auto.flags) else None
            who = cls.name if used.name == cls.name else f"{used.name} ({cls.name})"
            notes.append(
                f"{who} cannot run the {sched.label} schedule in diffusers; "
                f"ran {(fallback or AUTOMATIC).label}"
            )
            sched = fallback

    config = {**used.config, **_schedule_flags(cls, sched)}
    return SamplerChoice(
        name=used.name,
        schedule=sched.label if sched is not None else AUTOMATIC.label,
        scheduler_class=cls.name,
        config=config,
        notes=tuple(notes),
        batch_invariant=cls.batch_invariant,
        requested=requested,
    )


def _hashable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, set):
        return tuple(sorted(v))
    return v



# ------------------------------------------------------------------------------------------- listings


def diffusers_schedulers() -> list[str]:
    """The diffusers class names accepted as sampler names (ModelsLab's `scheduler` values and more)."""
    return [s.name for s in DIFFUSERS_SAMPLERS]

"""The sampler table, as data: the diffusers scheduler classes and what they can do, A1111's schedule types, and
every sampler row (A1111 1.7-1.10 names with their aliases and options, the diffusers class names ModelsLab takes,
the Stability v1 enum), with the lookups built from them. Resolving a name against it is backends/samplers.py's;
building the diffusers scheduler is the local engine's (backends/local/schedulers.py). Imports no diffusers.
See docs/reference/a1111_api.md §5 and docs/reference/diffusers_offline.md §3 and §6.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any



_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(d: Mapping[str, Any] | None = None, **kw: Any) -> Mapping[str, Any]:
    return MappingProxyType({**(d or {}), **kw})


# ------------------------------------------------------------------------------- diffusers classes


@dataclass(frozen=True)
class SchedulerClass:
    """What a diffusers scheduler class can do, as far as resolving a schedule type is concerned.

    Kept as data (not read from signatures at request time) so that resolving a name never imports diffusers;
    tests check this table against the installed classes.
    """

    name: str
    sigma_flags: bool = False  # takes use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas
    spacing: bool = False  # honours timestep_spacing
    native_spacing: str | None = None  # the spacing it always uses when it has no timestep_spacing option
    # The SDE solver draws its noise from a torchsde Brownian tree seeded by the config's `noise_sampler_seed`,
    # not from the pipeline's generators: make_scheduler seeds it, and a merged batch changes the images.
    seeded_by_config: bool = False

    @property
    def batch_invariant(self) -> bool:
        return not self.seeded_by_config


SCHEDULER_CLASSES: dict[str, SchedulerClass] = {
    c.name: c
    for c in (
        SchedulerClass("DDPMScheduler", spacing=True),
        SchedulerClass("DDIMScheduler", spacing=True),
        SchedulerClass("PNDMScheduler", spacing=True),
        SchedulerClass("LMSDiscreteScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("EulerDiscreteScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("EulerAncestralDiscreteScheduler", spacing=True),
        SchedulerClass("DPMSolverMultistepScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("HeunDiscreteScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("KDPM2DiscreteScheduler", sigma_flags=True, spacing=True),
        # no timestep_spacing option: set_timesteps always spaces linearly over [0, T-1]
        SchedulerClass("DPMSolverSinglestepScheduler", sigma_flags=True, native_spacing="linspace"),
        SchedulerClass("KDPM2AncestralDiscreteScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("UniPCMultistepScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("DDIMInverseScheduler", spacing=True),
        SchedulerClass("DEISMultistepScheduler", sigma_flags=True, spacing=True),
        SchedulerClass("IPNDMScheduler"),  # its own trigonometric schedule
        SchedulerClass("KarrasVeScheduler"),
        SchedulerClass("ScoreSdeVeScheduler"),
        # LCMScheduler takes timestep_spacing but its set_timesteps never reads it (LCM skips over an
        # `original_inference_steps` grid), so no schedule type applies.
        SchedulerClass("LCMScheduler"),
        SchedulerClass("DPMSolverSDEScheduler", sigma_flags=True, spacing=True, seeded_by_config=True),
    )
}

SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
# Diffusers refuses more than one sigma flag, and a model's own config may carry one (some repos ship
# use_karras_sigmas=True): every sigma-capable scheduler gets all three set explicitly.
SIGMA_RESET = _frozen({f: False for f in SIGMA_FLAGS})


# ------------------------------------------------------------------------------------- schedule types


@dataclass(frozen=True)
class Schedule:
    """An A1111 1.9+ schedule type (`sd_schedulers.schedulers`) and how diffusers runs it."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    # the diffusers config that makes this schedule
    flags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    nearest: str | None = None  # no diffusers flag: run this schedule instead ...
    why: str = ""  # ... and say why it is close


# A1111's order (GET /sdapi/v1/schedulers lists them so). Flags follow the diffusers docs' "Noise schedules"
# table (docs/reference/a1111_api.md §5.4). Karras/Exponential/Beta only switch sigmas: the spacing they start from is
# the sampler's (k-diffusion samplers carry "linspace", i.e. the model's full sigma range, as k-diffusion does).
SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic"),
    Schedule("uniform", "Uniform", need_inner_model=True, flags=_frozen(timestep_spacing="linspace")),
    Schedule("karras", "Karras", default_rho=7.0, flags=_frozen(use_karras_sigmas=True)),
    Schedule("exponential", "Exponential", flags=_frozen(use_exponential_sigmas=True)),
    Schedule(
        "polyexponential",
        "Polyexponential",
        default_rho=1.0,
        nearest="exponential",
        why="at its default rho 1 it is the same log-linear ramp",
    ),
    Schedule(
        "sgm_uniform",
        "SGM Uniform",
        aliases=("SGMUniform",),
        need_inner_model=True,
        flags=_frozen(timestep_spacing="trailing"),
    ),
    # Measured on SD1.5 sigmas at 20 steps, the log-sigma RMS distance to kl_optimal / AYS is smallest for
    # Uniform (0.55 / 0.40), then Karras (0.59 / 0.44), Exponential (0.70 / 0.76).
    Schedule("kl_optimal", "KL Optimal", nearest="uniform", why="the closest of diffusers' sigma spacings"),
    Schedule(
        "align_your_steps",
        "Align Your Steps",
        nearest="uniform",
        why="the closest of diffusers' sigma spacings; AYS needs explicit sigmas",
    ),
    Schedule("simple", "Simple", need_inner_model=True, flags=_frozen(timestep_spacing="trailing")),
    Schedule(
        "normal",
        "Normal",
        need_inner_model=True,
        nearest="uniform",
        why="both space timesteps linearly from the model's sigma_max to sigma_min",
    ),
    # A1111's ddim schedule takes timesteps range(1, 1000, 1000 // n): diffusers' "leading" with steps_offset=1
    Schedule(
        "ddim", "DDIM", need_inner_model=True, flags=_frozen(timestep_spacing="leading", steps_offset=1)
    ),
    Schedule("beta", "Beta", need_inner_model=True, flags=_frozen(use_beta_sigmas=True)),
)

SCHEDULE_BY_NAME: dict[str, Schedule] = {s.name: s for s in SCHEDULES}
AUTOMATIC = SCHEDULE_BY_NAME["automatic"]


def name_key(text: str) -> str:
    """Lookup key: case-insensitive, whitespace-normalised."""
    return " ".join(text.split()).casefold()


SCHEDULE_LOOKUP: dict[str, Schedule] = {}
for _s in SCHEDULES:
    for _n in (_s.name, _s.label, *_s.aliases):
        SCHEDULE_LOOKUP.setdefault(name_key(_n), _s)

# Legacy suffixes: the longest first so "DPM++ 2M SGM Uniform" is not read as "... Uniform".
SCHEDULE_SUFFIXES: tuple[tuple[str, Schedule], ...] = tuple(
    sorted(((" " + k, s) for k, s in SCHEDULE_LOOKUP.items()), key=lambda kv: -len(kv[0]))
)
# A1111 1.7/1.8 aliases of the combined names: k_dpmpp_2m_ka, k_dpmpp_2m_sde_exp, ...
ALIAS_SUFFIXES: tuple[tuple[str, Schedule], ...] = (
    ("_ka", SCHEDULE_BY_NAME["karras"]),
    ("_exp", SCHEDULE_BY_NAME["exponential"]),
)


# ---------------------------------------------------------------------------------------------- samplers


@dataclass(frozen=True)
class Sampler:
    """One row of the sampler table.

    `auto_schedule` is what "Automatic" means: for A1111 samplers, A1111's `options["scheduler"]`; None is the
    model's own discrete sigmas (reported as "Automatic", as A1111's infotext does). A row with `substitute`
    has no diffusers equivalent and runs that row (its `auto_schedule` still applies), with a note.
    """

    name: str
    scheduler_class: str | None = None
    config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    aliases: tuple[str, ...] = ()
    # GET /sdapi/v1/samplers "options", stringified as pydantic v1 does
    options: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    auto_schedule: str | None = None
    timesteps: bool = False  # DDIM / PLMS / UniPC: the schedule type is ignored, as in A1111
    substitute: str | None = None
    reason: str = "has no diffusers equivalent"


def _options(**kw: Any) -> Mapping[str, str]:
    # A1111's SamplerItem declares options: dict[str, str]; pydantic v1 turns True into "True".
    return _frozen({k: str(v) for k, v in kw.items()})


# k-diffusion takes the model's discrete sigmas from t=999 down to 0: "linspace" in diffusers. SD1.5's config
# says "leading" (+ steps_offset=1), which never starts at t=999 and gives different images from A1111.
_K = _frozen(timestep_spacing="linspace")
_DPMPP = _frozen(
    _K,
    algorithm_type="dpmsolver++",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    final_sigmas_type="zero",  # k-diffusion's sigmas end at 0
    euler_at_final=False,
    use_lu_lambdas=False,
)
# Latent diffusion never clips x0, and the final alpha is alphas_cumprod[0] (ldm's make_ddim_sampling_parameters).
# Set them explicitly: a base config from another class may lack them, and DDIM's defaults are the opposite.
_DDIM_FIXES = _frozen(clip_sample=False, set_alpha_to_one=False)
# A1111 DDIM/PLMS take the ldm "uniform" discretisation: range(0, 1000, 1000 // n) + 1.
_LDM_TIMESTEPS = _frozen(timestep_spacing="leading", steps_offset=1)

# A1111 1.10 `sd_samplers.all_samplers`, in its order (GET /sdapi/v1/samplers returns exactly these).
A1111_SAMPLERS: tuple[Sampler, ...] = (
    Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        _DPMPP,
        ("k_dpmpp_2m",),
        _options(scheduler="karras"),
        auto_schedule="karras",
    ),
    # DPM++ SDE → DPMSolverSDEScheduler, not the DPMSolverSinglestepScheduler of the diffusers docs table: it is
    # the port of k-diffusion's sample_dpmpp_sde that A1111 runs (a stochastic 2nd-order step with Brownian-tree
    # noise, 2N-1 model calls like A1111), while Singlestep is a deterministic ODE solver whose images look
    # different. The price: its noise ignores the pipeline's generators, so make_scheduler seeds
    # `noise_sampler_seed` from the request's seed(s), and the row is not batch-invariant (see batch_invariant).
    Sampler(
        "DPM++ SDE",
        "DPMSolverSDEScheduler",
        _K,
        ("k_dpmpp_sde",),
        _options(scheduler="karras", second_order=True, brownian_noise=True),
        auto_schedule="karras",
    ),
    Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        _frozen(_DPMPP, algorithm_type="sde-dpmsolver++"),
        ("k_dpmpp_2m_sde",),
        _options(scheduler="exponential", brownian_noise=True),
        auto_schedule="exponential",
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        _frozen(_DPMPP, algorithm_type="sde-dpmsolver++", solver_type="heun"),
        ("k_dpmpp_2m_sde_heun",),
        _options(scheduler="exponential", brownian_noise=True, solver_type="heun"),
        auto_schedule="exponential",
    ),
    # diffusers has no ancestral 2S; its docs call DPMSolverSinglestep (order 2, dpmsolver++) "very similar".
    Sampler(
        "DPM++ 2S a",
        aliases=("k_dpmpp_2s_a",),
        options=_options(scheduler="karras", uses_ensd=True, second_order=True),
        auto_schedule="karras",
        substitute="DPMSolverSinglestepScheduler",
    ),
    # diffusers 0.42 does have sde-dpmsolver++ at solver_order=3, but its 3rd-order term differs from
    # k-diffusion's sample_dpmpp_3m_sde (the D2 coefficient is -phi_3 - 1 instead of -phi_3), so the tested
    # 2nd-order SDE solver with the same Exponential default is the safer nearest.
    Sampler(
        "DPM++ 3M SDE",
        aliases=("k_dpmpp_3m_sde",),
        options=_options(scheduler="exponential", discard_next_to_last_sigma=True, brownian_noise=True),
        auto_schedule="exponential",
        substitute="DPM++ 2M SDE",
    ),
    Sampler(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        _K,
        ("k_euler_a", "k_euler_ancestral"),
        _options(uses_ensd=True),
    ),
    Sampler("Euler", "EulerDiscreteScheduler", _K, ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", _K, ("k_lms",)),  # needs scipy
    Sampler("Heun", "HeunDiscreteScheduler", _K, ("k_heun",), _options(second_order=True)),
    Sampler(
        "DPM2",
        "KDPM2DiscreteScheduler",
        _K,
        ("k_dpm_2",),
        _options(scheduler="karras", discard_next_to_last_sigma=True, second_order=True),
        auto_schedule="karras",
    ),
    Sampler(
        "DPM2 a",
        "KDPM2AncestralDiscreteScheduler",
        _K,
        ("k_dpm_2_a",),
        _options(scheduler="karras", discard_next_to_last_sigma=True, uses_ensd=True, second_order=True),
        auto_schedule="karras",
    ),
    # DPM fast / adaptive are DPM-Solver steps uniform in log-sigma between the model's sigma_min and sigma_max
    # (A1111 passes only those two, whatever the schedule type): that spacing is the Exponential schedule.
    Sampler(
        "DPM fast",
        aliases=("k_dpm_fast",),
        options=_options(uses_ensd=True),
        auto_schedule="exponential",
        substitute="DPM++ 2M",
    ),
    Sampler(
        "DPM adaptive",
        aliases=("k_dpm_ad",),
        options=_options(uses_ensd=True),
        auto_schedule="exponential",
        substitute="DPM++ 2M",
    ),
    # Restart = Heun steps on Karras sigmas plus re-noised restart intervals: Heun on Karras sigmas is its core.
    Sampler(
        "Restart",
        aliases=("restart",),
        options=_options(scheduler="karras", second_order=True),
        auto_schedule="karras",
        substitute="Heun",
    ),
    Sampler(
        "DDIM",
        "DDIMScheduler",
        _frozen(_DDIM_FIXES, **_LDM_TIMESTEPS),
        ("ddim",),
        timesteps=True,
    ),
    # CFG++ changes how guidance is applied, not the sampler: plain DDIM is what is left without it.
    Sampler("DDIM CFG++", aliases=("ddim_cfgpp",), timesteps=True, substitute="DDIM"),
    Sampler(
        "PLMS",
        "PNDMScheduler",
        _frozen(_LDM_TIMESTEPS, skip_prk_steps=True, set_alpha_to_one=False),
        ("plms",),
        timesteps=True,
    ),
    # A1111's UniPC options: variant bh1, order 3, time_uniform skip type, lower_order_final. Its last step ends
    # at t = 1/1000 (sigma_min), not at sigma 0, which is also what keeps diffusers' bh1 working: with
    # final_sigmas_type="zero" (the default) the bh1 update computes inf * 0 and every image is NaN.
    Sampler(
        "UniPC",
        "UniPCMultistepScheduler",
        _frozen(
            _K,
            solver_type="bh1",
            solver_order=3,
            lower_order_final=True,
            predict_x0=True,
            final_sigmas_type="sigma_min",
        ),
        ("unipc",),
        timesteps=True,
    ),
    Sampler("LCM", "LCMScheduler", aliases=("k_lcm",)),
)

_NOT_FOR_TXT2IMG = "does not work for SD/SDXL text-to-image in diffusers"

# Diffusers class names (ModelsLab's `scheduler`): the 17 of the ModelsLab document in its order, then
# LCMScheduler (ModelsLab's current list) and DPMSolverSDEScheduler (which "DPM++ SDE" runs). They keep diffusers'
# semantics: the model's config, the class defaults, plus only what SD/SDXL need to work at all.
DIFFUSERS_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DDPMScheduler", "DDPMScheduler", _frozen(clip_sample=False)),
    Sampler("DDIMScheduler", "DDIMScheduler", _DDIM_FIXES),
    # without skip_prk_steps PNDM spends 2N-1 model calls on Runge-Kutta warm-up steps
    Sampler("PNDMScheduler", "PNDMScheduler", _frozen(skip_prk_steps=True, set_alpha_to_one=False)),
    Sampler("LMSDiscreteScheduler", "LMSDiscreteScheduler"),
    Sampler("EulerDiscreteScheduler", "EulerDiscreteScheduler"),
    Sampler("EulerAncestralDiscreteScheduler", "EulerAncestralDiscreteScheduler"),
    Sampler("DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler"),
    Sampler("HeunDiscreteScheduler", "HeunDiscreteScheduler"),
    Sampler("KDPM2DiscreteScheduler", "KDPM2DiscreteScheduler"),
    Sampler("DPMSolverSinglestepScheduler", "DPMSolverSinglestepScheduler"),
    Sampler("KDPM2AncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler"),
    Sampler("UniPCMultistepScheduler", "UniPCMultistepScheduler"),
    # the inversion scheduler walks from image to noise: its forward twin is the one that samples
    Sampler("DDIMInverseScheduler", substitute="DDIMScheduler", reason=_NOT_FOR_TXT2IMG),
    Sampler("DEISMultistepScheduler", "DEISMultistepScheduler"),
    Sampler("IPNDMScheduler", "IPNDMScheduler"),
    # Karras et al. (2022) stochastic sampler for VE models (step() wants sample_hat): its deterministic core is
    # Heun on Karras sigmas.
    Sampler(
        "KarrasVeScheduler",
        auto_schedule="karras",
        substitute="HeunDiscreteScheduler",
        reason=_NOT_FOR_TXT2IMG,
    ),
    # score-SDE VE predictor(-corrector) (it has no step()): its reverse-diffusion predictor is an ancestral step.
    Sampler("ScoreSdeVeScheduler", substitute="EulerAncestralDiscreteScheduler", reason=_NOT_FOR_TXT2IMG),
    Sampler("LCMScheduler", "LCMScheduler"),
    Sampler("DPMSolverSDEScheduler", "DPMSolverSDEScheduler"),
)

# Stability v1 `sampler` enum → a row name (docs/reference/hosted_apis.md A.2).
STABILITY_SAMPLERS: Mapping[str, str] = _frozen(
    {
        "DDIM": "DDIM",
        "DDPM": "DDPMScheduler",
        "K_DPMPP_2M": "DPM++ 2M",
        "K_DPMPP_2S_ANCESTRAL": "DPM++ 2S a",
        "K_DPM_2": "DPM2",
        "K_DPM_2_ANCESTRAL": "DPM2 a",
        "K_EULER": "Euler",
        "K_EULER_ANCESTRAL": "Euler a",
        "K_HEUN": "Heun",
        "K_LMS": "LMS",
    }
)

ROWS: dict[str, Sampler] = {s.name: s for s in (*A1111_SAMPLERS, *DIFFUSERS_SAMPLERS)}

SAMPLER_LOOKUP: dict[str, Sampler] = {}
for _row in (*A1111_SAMPLERS, *DIFFUSERS_SAMPLERS):
    for _n in (_row.name, *_row.aliases):
        SAMPLER_LOOKUP.setdefault(name_key(_n), _row)
for _n, _target in STABILITY_SAMPLERS.items():
    SAMPLER_LOOKUP.setdefault(name_key(_n), ROWS[_target])

VALID_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys((*(s.name for s in A1111_SAMPLERS), *STABILITY_SAMPLERS, *(s.name for s in DIFFUSERS_SAMPLERS)))
)

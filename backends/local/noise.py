"""A1111's variation seeds (docs/reference/a1111_features.md §2): the starting noise of each image built from its
seed, its variation seed (`subseed`), the variation strength and the seed-resize size.

Image i's noise, unscaled (the pipelines multiply by the scheduler's init_noise_sigma themselves):
1. `randn(seed_i)`, drawn at the seed-resize size when that is on;
2. with a strength ≠ 0, spherically interpolated towards `randn(subseed_i)` (A1111's slerp and its quirk, below);
3. with seed resize, pasted centred into the full-size `randn(seed_i)` (centre-cropped when it is the larger).

`randn(s)` is `torch.randn((1, C, h, w), generator=torch.Generator("cpu").manual_seed(s))`: exactly the noise
diffusers draws for a generator seeded s, so strength 1 with subseed s is the image of seed s alone, and a job
without variation keeps diffusers' own draw (the engine passes no latents then). The per-image generator also
draws its full-size noise once, as diffusers would have, so the ancestral step noise that follows is unchanged:
variation seeds never touch step noise (A1111 neither).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LATENT_SCALE = 8  # pixels per latent cell in SD1/SD2/SDXL
PARALLEL_DOT = 0.9995  # A1111's slerp falls back to a (reversed) linear mix when the noises are nearly parallel


@dataclass(frozen=True)
class ImageNoise:
    """What one image's starting noise is made of."""

    seed: int
    subseed: int
    strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (w, h) in pixels, both > 0

    @property
    def varies(self) -> bool:
        """False: the noise is plain randn(seed), which diffusers draws itself."""
        return self.strength != 0 or self.resize_from is not None


def resize_from(value) -> tuple[int, int] | None:
    """A1111 uses seed_resize_from_w/_h only when both are > 0."""
    if not value:
        return None
    w, h = (int(v) for v in value)
    return (w, h) if w > 0 and h > 0 else None


def randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two (C, H, W) noises. The quirk kept on purpose: norms and dot products
    are taken along dim 1 (height), so each channel and column has its own angle; and when the noises are nearly
    parallel the linear fallback mixes them the other way round (t towards `low`)."""
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > PARALLEL_DOT:
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    return ((torch.sin((1.0 - t) * omega) / sin_omega).unsqueeze(1) * low
            + (torch.sin(t * omega) / sin_omega).unsqueeze(1) * high)


def paste_centred(canvas: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """`patch` (C, h, w) placed at the centre of `canvas` (C, H, W), offset (H−h)//2, (W−w)//2 per axis; a patch
    larger than the canvas along an axis is centre-cropped there."""
    out = canvas.clone()
    target, source = [slice(None)], [slice(None)]
    for big, small in zip(canvas.shape[1:], patch.shape[1:]):
        if small <= big:
            at = (big - small) // 2
            target.append(slice(at, at + small))
            source.append(slice(None))
        else:
            at = (small - big) // 2
            target.append(slice(None))
            source.append(slice(at, at + big))
    out[tuple(target)] = patch[tuple(source)]
    return out


def image_noise(spec: ImageNoise, shape: tuple[int, int, int], generator: torch.Generator | None = None):
    """The (1, C, H, W) float32 starting noise of one image; `shape` is (C, H, W) in latent cells.

    `generator` (seeded spec.seed) supplies the full-size seed noise and is left one draw on, as diffusers
    leaves it; None: a fresh one."""
    full = torch.randn((1, *shape), generator=generator or torch.Generator("cpu").manual_seed(spec.seed))[0]
    noise = full
    if spec.resize_from is not None:
        w, h = spec.resize_from
        noise = randn(spec.seed, (shape[0], h // LATENT_SCALE, w // LATENT_SCALE))
    if spec.strength != 0:
        noise = slerp(float(spec.strength), noise, randn(spec.subseed, tuple(noise.shape)))
    if spec.resize_from is not None:
        noise = paste_centred(full, noise)
    return noise[None]


def batch_noise(specs: list[ImageNoise], channels: int, width: int, height: int,
                generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """The (B, C, height/8, width/8) float32 starting noise of a call's images, one spec (and generator) each."""
    shape = (channels, height // LATENT_SCALE, width // LATENT_SCALE)
    gens = generators or [None] * len(specs)
    return torch.cat([image_noise(spec, shape, g) for spec, g in zip(specs, gens)])


def override_noise(scheduler, noise: torch.Tensor) -> None:
    """An image-to-image pass's noise replaced by `noise`: `add_noise` is wrapped on this one (freshly made)
    scheduler instance, because diffusers' image-to-image pipelines draw their noise themselves (from the
    generators, which so stay one draw on, as A1111's do) and take none from the caller."""
    original = scheduler.add_noise

    def add_noise(samples, _drawn, timesteps):
        return original(samples, noise.to(samples.device, samples.dtype), timesteps)

    scheduler.add_noise = add_noise

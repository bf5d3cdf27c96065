"""Variation seeds, tiling, the SDXL refiner, the hires pass's own model/sampler/prompts/steps and the infotext
params the engine adds, on the tiny models (backends/local/noise.py, features/tiling.py, refiner.py, hires.py)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image

from backends.job import Hires, InvalidRequest, Job, Refiner
from backends.local.engine import LocalEngine
from backends.local.hires import second_pass_steps
from backends.local.models import ModelManager
from backends.local.noise import ImageNoise, batch_noise, paste_centred, slerp
from tests.tiny_vae_embeddings import write_embeddings, write_vaes
from imaging import pixels
from imaging import png_bytes as png

SIZE = 64


def job(**kw) -> Job:
    base = {"prompt": "a red fox in the snow", "width": SIZE, "height": SIZE, "steps": 3, "seed": 1234,
            "sampler": "Euler"}
    return Job(**{**base, **kw})


def close(a: Image.Image, b: Image.Image, levels: int = 2) -> bool:
    """Equal but for batched matrix products' rounding (test_engine.py)."""
    return np.abs(pixels(a) - pixels(b)).max() <= levels


# ------------------------------------------------------------------------------------------- noise alone


def test_the_noise_rules():
    low, high = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    assert torch.equal(slerp(1.0, low, high), high)  # strength 1: the subseed's noise, exactly
    assert torch.equal(slerp(0.0, low, high), low)
    # nearly parallel noises: the linear fallback mixes them the other way round (A1111's quirk)
    assert torch.allclose(slerp(0.25, low, low * 1.0001), low * 0.25 + low * 1.0001 * 0.75)
    canvas, patch = torch.zeros(1, 6, 6), torch.ones(1, 2, 4)
    pasted = paste_centred(canvas, patch)
    assert pasted[0, 2:4, 1:5].eq(1).all() and pasted.sum() == 8
    big = torch.arange(64.0).reshape(1, 8, 8)
    assert torch.equal(paste_centred(torch.zeros(1, 4, 4), big), big[:, 2:6, 2:6])  # larger: centre-cropped
    # diffusers' own draw for a generator seeded s is torch.randn((1, 4, h, w)) with it
    plain = batch_noise([ImageNoise(5, 9)], 4, SIZE, SIZE)
    assert torch.equal(plain, torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5)))


# ------------------------------------------------------------------------------------------ variation seeds


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_strength_0_is_no_variation_and_1_is_the_subseeds_own_image(engine, model):
    plain = engine.generate(job(model=model))
    zero = engine.generate(job(model=model, subseed=99, subseed_strength=0.0))
    assert png(zero.images[0]) == png(plain.images[0])
    assert zero.seeds == [1234] and zero.subseeds == [99]
    full = engine.generate(job(model=model, subseed=99, subseed_strength=1.0))
    assert png(full.images[0]) == png(engine.generate(job(model=model, seed=99)).images[0])
    assert full.seeds == [1234]
    half = engine.generate(job(model=model, subseed=99, subseed_strength=0.5))
    assert png(half.images[0]) not in (png(plain.images[0]), png(full.images[0]))
    assert png(engine.generate(job(model=model, subseed=99, subseed_strength=0.5)).images[0]) == png(half.images[0])
    assert half.images[0].size == (SIZE, SIZE)


def test_seed_resize_from(engine):
    plain = png(engine.generate(job()).images[0])
    assert png(engine.generate(job(seed_resize_from=(SIZE, SIZE))).images[0]) == plain
    resized = engine.generate(job(seed_resize_from=(32, 48)))
    assert png(resized.images[0]) != plain and resized.images[0].size == (SIZE, SIZE)
    assert png(engine.generate(job(seed_resize_from=(32, 48))).images[0]) == png(resized.images[0])
    # A1111 uses it only when both are > 0
    assert png(engine.generate(job(seed_resize_from=(-1, -1))).images[0]) == plain


def test_a_batch_shares_the_seed_and_counts_the_subseed(engine):
    batch = engine.generate(job(batch_size=2, n_iter=2, subseed=40, subseed_strength=0.6))
    assert batch.seeds == [1234] * 4 and batch.subseeds == [40, 41, 42, 43]
    for i in (1, 2):
        alone = engine.generate(job(subseed=40 + i, subseed_strength=0.6))
        assert close(batch.images[i], alone.images[0]), i
    plain = engine.generate(job(batch_size=2, subseed=7))
    assert plain.seeds == [1234, 1235] and plain.subseeds == [7, 8]
    drawn = engine.generate(job(subseed=-1))
    assert 0 <= drawn.subseeds[0] < 2**32


class Quiet:
    interrupted = skipped = False

    def __init__(self):
        self.steps = []

    def report(self, step, steps, batch_no, preview=None):
        self.steps.append((step, steps))


def test_jobs_with_and_without_variation_share_a_call(engine):
    varied, plain = job(subseed=5, subseed_strength=0.4), job(seed=77)
    assert engine.batch_key(varied) == engine.batch_key(plain)
    runs = [engine.start(varied), engine.start(plain)]
    engine.run_batch([(run, Quiet()) for run in runs])
    assert runs[0].batched == 2
    assert close(runs[0].result().images[0], engine.generate(varied).images[0])
    assert close(runs[1].result().images[0], engine.generate(plain).images[0])


def test_variation_applies_to_the_hires_pass(engine):
    hires = Hires(width=SIZE * 2, height=SIZE * 2, upscaler="Latent", steps=2, denoising_strength=0.5)
    plain = engine.generate(job(hires=hires))
    zero = engine.generate(job(hires=hires, subseed=3, subseed_strength=0.0))
    assert png(zero.images[0]) == png(plain.images[0])
    varied = engine.generate(job(hires=hires, subseed=3, subseed_strength=0.5))
    assert varied.images[0].size == (SIZE * 2, SIZE * 2) and png(varied.images[0]) != png(plain.images[0])


# ------------------------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_tiling_wraps_both_ways_and_leaves_the_model_as_it_was(engine, model):
    before = png(engine.generate(job(model=model, width=128)).images[0])
    tiled = engine.generate(job(model=model, width=128, tiling=True))
    plain = engine.generate(job(model=model, width=128))
    assert png(plain.images[0]) == before  # padding modes restored: byte-identical plain images
    assert png(tiled.images[0]) != before and tiled.images[0].size == (128, SIZE)
    assert tiled.params == {"Tiling": "True"} and plain.params == {}
    assert png(engine.generate(job(model=model, width=128, tiling=True)).images[0]) == png(tiled.images[0])
    pipe = engine.models.get(model).pipe
    modes = {m.padding_mode for part in (pipe.unet, pipe.vae) for m in part.modules()
             if isinstance(m, torch.nn.Conv2d)}
    assert modes == {"zeros"}


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_a_tiled_image_lives_on_a_torus(engine, model):
    """The random-weight tiny models draw pixel noise, whose edge columns differ as much as any two columns, so
    seamlessness is measured exactly instead: with every conv padding circularly, starting noise rolled by
    (4, 8) latent cells gives the image rolled by (32, 64) pixels, which holds only when the left and right (and
    top and bottom) edges continue each other. Without tiling the rolled image differs everywhere."""
    from backends.local.features.tiling import circular_padding

    pipe = engine.models.get(model).pipe
    noise = torch.randn((1, 4, 8, 16), generator=torch.Generator().manual_seed(3))

    def draw(latents):
        return pipe(prompt="a fox", latents=latents, width=128, height=SIZE, num_inference_steps=3,
                    output_type="np").images[0] * 255

    def roll_gap() -> float:
        rolled = draw(noise.roll((4, 8), dims=(-2, -1)))
        return float(np.abs(np.roll(draw(noise), (32, 64), axis=(0, 1)) - rolled).max())

    plain = roll_gap()
    with circular_padding(pipe.unet, pipe.vae):
        tiled = roll_gap()
    assert tiled < 0.01 and plain > 50, (tiled, plain)


def test_tiling_restores_padding_after_a_failure(engine):
    from backends.local.features.tiling import circular_padding

    pipe = engine.models.get("tiny-sd1").pipe
    with pytest.raises(RuntimeError), circular_padding(pipe.unet, pipe.vae):
        assert pipe.unet.conv_in.padding_mode == "circular"
        raise RuntimeError("boom")
    assert pipe.unet.conv_in.padding_mode == "zeros"


# ------------------------------------------------------------------------------------------------ refiner


def test_the_refiner_hands_over_exactly(engine):
    """The same weights as refiner with Euler (first order: a restart loses no history) give the base's own image:
    the handover at the switch point loses nothing. 1.0 never switches."""
    plain = engine.generate(job(model="tiny-sdxl", steps=4))
    refined = engine.generate(job(model="tiny-sdxl", steps=4, refiner=Refiner("tiny-sdxl.safetensors", 0.5)))
    assert close(refined.images[0], plain.images[0], 1)
    assert refined.params["Refiner"].startswith("tiny-sdxl [") and refined.params["Refiner switch at"] == 0.5
    never = engine.generate(job(model="tiny-sdxl", steps=4, refiner=Refiner("tiny-sdxl", 1.0)))
    assert png(never.images[0]) == png(plain.images[0]) and "Refiner" not in never.params


def test_another_refiner_finishes_the_image(ext):
    plain = ext.generate(job(model="tiny-sdxl", steps=4))
    refined = ext.generate(job(model="tiny-sdxl", steps=4, refiner=Refiner("tiny-sdxl-other", 0.5)))
    assert refined.images[0].size == (SIZE, SIZE)
    assert png(refined.images[0]) != png(plain.images[0])
    assert png(ext.generate(job(model="tiny-sdxl", steps=4, refiner=Refiner("tiny-sdxl-other", 0.5))).images[0]) \
        == png(refined.images[0])
    later = ext.generate(job(model="tiny-sdxl", steps=4, refiner=Refiner("tiny-sdxl-other", 0.75)))
    assert png(later.images[0]) not in (png(refined.images[0]), png(plain.images[0]))
    assert refined.params["Refiner"].startswith("tiny-sdxl-other")
    assert png(ext.generate(job(model="tiny-sdxl", steps=4)).images[0]) == png(plain.images[0])  # next job: as before


def test_the_refiner_with_ancestral_noise_runs_in_one_call_per_batch(engine):
    kw = {"model": "tiny-sdxl", "steps": 4, "sampler": "Euler a", "refiner": Refiner("tiny-sdxl", 0.6)}
    batch = engine.generate(job(batch_size=2, **kw))
    assert len(batch.images) == 2
    assert close(batch.images[1], engine.generate(job(seed=1235, **kw)).images[0])


def test_a_refiner_on_sd1_is_not_applied_and_an_unknown_one_is_refused(engine):
    plain = engine.generate(job())
    result = engine.generate(job(refiner=Refiner("tiny-sdxl", 0.5)))
    assert "refiner" in result.not_applied and "Refiner" not in result.params
    assert png(result.images[0]) == png(plain.images[0])
    with pytest.raises(InvalidRequest, match="Could not find checkpoint"):
        engine.validate(job(model="tiny-sdxl", refiner=Refiner("no-such-model", 0.5)))


# --------------------------------------------------------------------------------------------- hires extras


def test_hires_steps_follow_a1111s_rule(engine):
    assert second_pass_steps(20, 0.7)[0] == 28
    for steps, denoise in ((20, 0.7), (3, 0.5), (7, 0.33), (20, 1.0), (5, 0.0)):
        total, strength = second_pass_steps(steps, denoise)
        assert min(int(total * strength), total) == steps, (steps, denoise)
    control = Quiet()
    engine.generate(job(hires=Hires(width=SIZE * 2, height=SIZE * 2, steps=2, denoising_strength=0.3)), control)
    assert control.steps[-1] == (2, 2) and len(control.steps) == 3 + 2


def hires(**kw) -> Hires:
    return Hires(**{"width": SIZE * 2, "height": SIZE * 2, "upscaler": "Latent", "steps": 2, "denoising_strength": 0.6,
                    **kw})


def test_hires_sampler_and_prompts_change_the_second_pass_only(engine):
    plain = png(engine.generate(job(hires=hires())).images[0])
    for change in ({"sampler": "DPM++ 2M"}, {"schedule": "Karras"}, {"prompt": "a blue whale"},
                   {"negative_prompt": "blurry"}):
        assert png(engine.generate(job(hires=hires(**change))).images[0]) != plain, change
    # the first pass's own prompt as the hires prompt, and the same checkpoint by name, change nothing
    assert png(engine.generate(job(hires=hires(prompt="a red fox in the snow"))).images[0]) == plain
    assert png(engine.generate(job(hires=hires())).images[0]) == plain


@pytest.fixture(scope="module")
def ext(tmp_path_factory, tiny_models_dir) -> LocalEngine:
    """The tiny models by path, plus another checkpoint of each (other UNet weights), a VAE and embeddings."""
    folder = tmp_path_factory.mktemp("variations")
    write_vaes(folder)
    write_embeddings(folder)
    checkpoints = tiny_models_dir / "Stable-diffusion"
    for name, cls in (("tiny-sd1", StableDiffusionPipeline), ("tiny-sdxl", StableDiffusionXLPipeline)):
        other = cls.from_pretrained(checkpoints / name)
        with torch.no_grad():
            for p in other.unet.parameters():
                p.mul_(1.1)
        other.save_pretrained(folder / "Stable-diffusion" / f"{name}-other")
    return LocalEngine(ModelManager(folder, default=str(checkpoints / "tiny-sd1"),
                                    aliases={"tiny-sdxl": str(checkpoints / "tiny-sdxl")}, cache_size=4))


def test_a_hires_checkpoint_runs_the_second_pass(ext):
    plain = ext.generate(job(hires=hires()))
    other = ext.generate(job(hires=hires(model="tiny-sd1-other")))
    assert other.images[0].size == (SIZE * 2, SIZE * 2) and png(other.images[0]) != png(plain.images[0])
    assert png(ext.generate(job(hires=hires())).images[0]) == png(plain.images[0])
    with pytest.raises(InvalidRequest, match="latent space"):
        ext.validate(job(hires=hires(model="tiny-sdxl")))


def test_params_name_the_vae_and_the_embeddings_used(ext):
    import hashlib

    def file_sha256(path):  # computed here, not through the engine's remembered hashes
        return hashlib.sha256(path.read_bytes()).hexdigest()

    folder = ext.models.models_dir
    plain = ext.generate(job())
    assert plain.params == {}
    vae = ext.generate(job(vae="tiny-other"))
    assert vae.params == {"VAE hash": file_sha256(folder / "VAE" / "tiny-other.safetensors")[:10],
                          "VAE": "tiny-other.safetensors"}
    ti = ext.generate(job(prompt="a red fox tinyone", negative_prompt="tinymulti"))
    hashes = {name: file_sha256(folder / "embeddings" / f"{name}{suffix}")[:12]
              for name, suffix in (("tinyone", ".pt"), ("tinymulti", ".safetensors"))}
    assert sorted(ti.params["TI hashes"].split(", ")) == sorted(f"{n}: {h}" for n, h in hashes.items())

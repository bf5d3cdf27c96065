"""The features that change how the UNet runs (backends/local/features/): panorama (windowed MultiDiffusion), SAG
(diffusers' SAG pipeline) and tomesd, on the tiny models: the size kept, the pixels changed, determinism, the
model left as it was for the next job (byte-identical to a fresh engine's), batch keys, what is not applied."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from backends.config import Features
from backends.job import InvalidRequest, Job
from imaging import pixels
from imaging import png_bytes as png

MODELS = ["tiny-sd1", "tiny-sdxl"]
# The tiny UNets' sample_size is 64 latents (512 px), as SD1.5's: a panorama narrower than that is one window,
# i.e. the plain job. 64×1024 is 9 windows of 8×64 latents at stride 8.
WIDE = dict(width=1024, height=64)


def job(**kw) -> Job:
    # DDIM: a sampler SAG can run with (integer DDPM timesteps)
    base = dict(prompt="a lighthouse on a cliff", width=64, height=64, steps=3, seed=4321, sampler="DDIM")
    return Job(**{**base, **kw})


@pytest.fixture(scope="module")
def engine(tiny_models_dir):
    """This module's own engine: the session one has run other modules' jobs, and "the next job is what a fresh
    engine gives" is about what these features leave behind."""
    from backends.local.engine import LocalEngine
    from backends.local.models import ModelManager

    return LocalEngine(ModelManager(tiny_models_dir, default="tiny-sd1", cache_size=4), features=Features())


@pytest.fixture(scope="module")
def fresh(tiny_models_dir):
    """What a plain job gives on an engine and models no feature ever touched."""
    from backends.local.engine import LocalEngine
    from backends.local.models import ModelManager

    engine = LocalEngine(ModelManager(tiny_models_dir, default="tiny-sd1", cache_size=2))
    cache = {}

    def plain(**kw) -> bytes:
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = png(engine.generate(job(**kw)).images[0])
        return cache[key]

    return plain


def untouched(engine, model: str) -> None:
    """No trace of a feature left on the model's UNet."""
    unet = engine.models.get(model).pipe.unet
    assert "forward" not in unet.__dict__
    assert not unet._forward_pre_hooks
    assert not any(type(m).__name__ == "ToMeBlock" or "_tome_info" in m.__dict__ for m in unet.modules())
    assert not any("Store" in type(p).__name__ for p in unet.attn_processors.values())


class Raising:
    """A Control whose progress report fails: the pipeline call ends in an exception."""

    interrupted = skipped = False

    def report(self, *args, **kwargs):
        raise RuntimeError("report failed")


# ------------------------------------------------------------------------------------------ panorama


def test_windows_cover_the_latents_to_the_last_column():
    from backends.local.features.panorama import windows

    views = windows(8, 100, 64)  # 100 is no multiple of the stride 8 past the window: a last window flush right
    assert [(c.start, c.stop) for _, c in views] == [(x, x + 64) for x in (0, 8, 16, 24, 32, 36)]
    assert all((r.start, r.stop) == (0, 8) for r, _ in views)  # a side under the native size is one window
    assert len(windows(128, 512, 128)) == 1 + (512 - 128) // 16  # SDXL: 128 latents, stride 16
    assert windows(64, 64, 64) == [(slice(0, 64), slice(0, 64))]


@pytest.mark.parametrize("model", MODELS)
def test_panorama_is_windowed_deterministic_and_leaves_the_model(engine, fresh, model):
    plain = engine.generate(job(model=model, **WIDE))
    a = engine.generate(job(model=model, panorama=True, **WIDE))
    b = engine.generate(job(model=model, panorama=True, **WIDE))
    assert a.images[0].size == (1024, 64)
    assert png(a.images[0]) == png(b.images[0])
    assert png(a.images[0]) != png(plain.images[0])
    assert a.not_applied == {}
    untouched(engine, model)
    after = engine.generate(job(model=model, **WIDE))
    assert png(after.images[0]) == png(plain.images[0]) == fresh(model=model, **WIDE)


def test_panorama_on_a_native_sized_image_is_the_plain_job(engine):
    # one window: the original forward on the whole latents
    plain = engine.generate(job())
    assert png(engine.generate(job(panorama=True)).images[0]) == png(plain.images[0])


# ------------------------------------------------------------------------------------------ SAG


def test_sag_changes_the_image_and_leaves_the_model(engine, fresh):
    plain = engine.generate(job())
    a = engine.generate(job(sag_scale=0.75))
    b = engine.generate(job(sag_scale=0.75))
    assert a.images[0].size == (64, 64)
    assert png(a.images[0]) == png(b.images[0])
    assert png(a.images[0]) != png(plain.images[0])
    assert a.not_applied == {}
    assert png(engine.generate(job(sag_scale=1.5)).images[0]) != png(a.images[0])
    untouched(engine, "tiny-sd1")
    assert png(engine.generate(job()).images[0]) == png(plain.images[0]) == fresh()


@pytest.mark.parametrize("case, words", [
    (dict(model="tiny-sdxl"), "SDXL"),
    (dict(sampler="Euler"), "Euler"),
    (dict(panorama=True, **WIDE), "panorama"),
])
def test_sag_not_applied_runs_the_job_without_it(engine, case, words):
    result = engine.generate(job(sag_scale=0.75, **case))
    assert words in result.not_applied["sag_scale"]
    assert png(result.images[0]) == png(engine.generate(job(**case)).images[0])


def test_sag_not_applied_to_img2img(engine):
    init = Image.new("RGB", (64, 64), (120, 60, 30))
    result = engine.generate(job(sag_scale=0.75, init_image=init, denoising_strength=0.6))
    assert "text-to-image" in result.not_applied["sag_scale"]
    assert result.images[0].size == (64, 64)


def test_sag_reports_progress_and_stops_on_interrupt(engine):
    class StopAtOne:
        interrupted = skipped = False

        def __init__(self):
            self.steps = []

        def report(self, step, steps, batch_no, preview=None):
            self.steps.append((step, steps))
            self.interrupted = True

    control = StopAtOne()
    result = engine.generate(job(sag_scale=0.75, steps=4), control)
    assert control.steps == [(1, 4)]  # the loop left after the first step
    assert result.interrupted and result.images[0].size == (64, 64)
    untouched(engine, "tiny-sd1")


# ------------------------------------------------------------------------------------------ tomesd


@pytest.mark.parametrize("model", MODELS)
def test_tome_merges_tokens_and_is_removed_after(engine, fresh, model):
    plain = engine.generate(job(model=model))
    a = engine.generate(job(model=model, tome_ratio=0.5))
    b = engine.generate(job(model=model, tome_ratio=0.5))
    assert a.images[0].size == (64, 64)
    assert png(a.images[0]) == png(b.images[0])
    assert png(a.images[0]) != png(plain.images[0])
    # ratio 0 merges nothing: tomesd's copy of the block's forward computes what diffusers' own does
    assert png(engine.generate(job(model=model, tome_ratio=0.0)).images[0]) == png(plain.images[0])
    untouched(engine, model)
    assert png(engine.generate(job(model=model)).images[0]) == png(plain.images[0]) == fresh(model=model)


def test_tome_patches_the_transformer_blocks_only_during_the_call(engine):
    seen = []

    class Look:
        interrupted = skipped = False

        def report(self, *args, **kwargs):
            unet = engine.models.get("tiny-sd1").pipe.unet
            seen.append(sum(type(m).__name__ == "ToMeBlock" for m in unet.modules()))

    engine.generate(job(tome_ratio=0.5), Look())
    assert seen and all(n > 0 for n in seen)
    untouched(engine, "tiny-sd1")


def test_tome_inside_panorama_merges_in_each_window(engine):
    # each window goes through the UNet's hooks, so tomesd sizes its merge by the window, not the whole latents
    pano = engine.generate(job(panorama=True, **WIDE))
    both = engine.generate(job(panorama=True, tome_ratio=0.5, **WIDE))
    assert both.images[0].size == (1024, 64)
    assert png(both.images[0]) != png(pano.images[0])
    untouched(engine, "tiny-sd1")


def test_tome_with_sag_leaves_the_mid_block_to_sag(engine):
    # SAG reshapes the mid block's self-attention map to its full token grid: merged tokens there would not fit
    sag = engine.generate(job(sag_scale=0.75))
    both = engine.generate(job(sag_scale=0.75, tome_ratio=0.5))
    assert both.not_applied == {}
    assert png(both.images[0]) != png(sag.images[0])
    untouched(engine, "tiny-sd1")


# ------------------------------------------------------------------------------------------ all three


@pytest.mark.parametrize("feature", [dict(panorama=True, **WIDE), dict(sag_scale=0.75), dict(tome_ratio=0.5)])
def test_a_failing_call_leaves_the_model_as_it_was(engine, fresh, feature):
    with pytest.raises(RuntimeError, match="report failed"):
        engine.generate(job(**feature), Raising())
    untouched(engine, "tiny-sd1")
    assert png(engine.generate(job()).images[0]) == fresh()


@pytest.mark.parametrize("feature", [dict(panorama=True, **WIDE), dict(sag_scale=0.75), dict(tome_ratio=0.5)])
def test_batch_mates_get_what_they_get_alone(engine, feature):
    alone = [engine.generate(job(seed=s, **feature)).images[0] for s in (10, 11)]
    runs = [engine.start(job(seed=s, **feature)) for s in (10, 11)]
    assert engine.batch_key(runs[0].job) == engine.batch_key(runs[1].job)
    control = Raising()
    control.report = lambda *a, **k: None
    engine.run_batch([(run, control) for run in runs])
    for run, image in zip(runs, alone):
        assert run.batched == 2
        assert np.abs(pixels(run.images[0]) - pixels(image)).max() <= 2


def test_jobs_with_and_without_a_feature_never_share_a_batch_key(engine):
    keys = {engine.batch_key(j) for j in (
        job(), job(panorama=True), job(sag_scale=0.75), job(sag_scale=0.5), job(tome_ratio=0.5),
        job(tome_ratio=0.3), job(sag_scale=0.75, tome_ratio=0.5), job(panorama=True, tome_ratio=0.5),
    )}
    assert len(keys) == 8


@pytest.mark.parametrize("bad", [dict(tome_ratio=0.9), dict(tome_ratio=-0.1), dict(sag_scale=-1.0)])
def test_out_of_range_values_are_refused(engine, bad):
    with pytest.raises(InvalidRequest):
        engine.validate(job(**bad))

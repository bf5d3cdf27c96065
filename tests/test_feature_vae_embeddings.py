"""The VAE choice (Job.vae) and textual-inversion embeddings on the tiny models, offline
(backends/local/features/vae.py, embeddings.py; models built by tests/tiny_vae_embeddings.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from backends.job import Hires, InvalidRequest, Job
from backends.local.engine import LocalEngine
from backends.local.features.embeddings import family_widths, list_embeddings
from backends.local.features.vae import list_vaes
from backends.local.models import ModelManager
from backends.local.text_encoding import count_tokens
from tests.tiny_vae_embeddings import write_embeddings, write_vaes

SIZE = 64
VOCAB = 49408  # the CLIP tokenizer's size, which every job must leave as it found it


def job(**kw) -> Job:
    base = dict(prompt="a red fox in the snow", width=SIZE, height=SIZE, steps=3, seed=77, sampler="Euler")
    return Job(**{**base, **kw})


def png(result) -> bytes:
    buf = io.BytesIO()
    result.images[0].save(buf, format="PNG")
    return buf.getvalue()


def _manager(models_dir, tiny_models_dir) -> ModelManager:
    # the shared tiny models by path: the VAE and embedding files go in this test's own models folder
    checkpoints = tiny_models_dir / "Stable-diffusion"
    return ModelManager(models_dir, default=str(checkpoints / "tiny-sd1"),
                        aliases={"tiny-sdxl": str(checkpoints / "tiny-sdxl")}, cache_size=2)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae-embeddings")
    write_vaes(folder)
    write_embeddings(folder)
    return folder


@pytest.fixture(scope="module")
def ext(models_dir, tiny_models_dir) -> LocalEngine:
    return LocalEngine(_manager(models_dir, tiny_models_dir))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, tiny_models_dir) -> LocalEngine:
    """An engine over the same models with no VAE or embedding files: what a job gets without the features."""
    return LocalEngine(_manager(tmp_path_factory.mktemp("plain"), tiny_models_dir))


def gen(engine: LocalEngine, **kw):
    return engine.generate(job(**kw))


# ------------------------------------------------------------------------------------------------- VAE


def test_a_vae_changes_the_image_in_every_layout_and_none_gives_it_back(ext, fresh, models_dir):
    base = png(gen(ext))
    assert base == png(gen(fresh))
    loaded = ext.models.get(None)
    unet, own = loaded.pipe.unet, loaded.pipe.vae

    other = png(gen(ext, vae="tiny-other.safetensors"))
    assert other != base
    # the same weights as a name without extension, any case, a .pt with state_dict/first_stage_model.*, a
    # diffusers folder by name and by absolute path
    for name in ("tiny-other", "TINY-OTHER.safetensors", "tiny-other-ckpt.pt", "tiny-other-folder",
                 str(models_dir / "VAE" / "tiny-other-folder")):
        assert png(gen(ext, vae=name)) == other, name

    assert png(gen(ext, vae="None")) == base
    assert png(gen(ext)) == base
    # the model was not reloaded, and its own VAE is back
    assert ext.models.get(None) is loaded
    assert loaded.pipe.unet is unet and loaded.pipe.vae is own


def test_the_vae_serves_img2img_and_every_pipeline_gets_its_own_back(ext):
    init = Image.new("RGB", (SIZE, SIZE), (200, 40, 30))
    plain = png(gen(ext, init_image=init, denoising_strength=0.6))
    swapped = png(gen(ext, init_image=init, denoising_strength=0.6, vae="tiny-other"))
    assert swapped != plain
    loaded = ext.models.get(None)
    assert loaded.variants and all(p.vae is loaded.pipe.vae for p in loaded.variants.values())
    assert png(gen(ext, init_image=init, denoising_strength=0.6)) == plain


def test_a_pipeline_made_during_the_call_gets_the_models_vae_back(ext):
    # the hires pass makes tiny-sdxl's first img2img pipeline inside the call, from the swapped-in VAE
    hires = Hires(width=SIZE * 2, height=SIZE * 2, upscaler="Lanczos", steps=2)
    loaded = ext.models.get("tiny-sdxl")
    assert "img2img" not in loaded.variants
    plain = png(gen(ext, model="tiny-sdxl", hires=hires))
    ext.models.unload("tiny-sdxl")
    swapped = png(gen(ext, model="tiny-sdxl", hires=hires, vae="tiny-other"))
    assert swapped != plain
    loaded = ext.models.get("tiny-sdxl")
    assert loaded.variants["img2img"].vae is loaded.pipe.vae
    assert png(gen(ext, model="tiny-sdxl", hires=hires)) == plain


def test_automatic_takes_the_vae_named_after_the_checkpoint(ext):
    auto = png(gen(ext, vae="Automatic"))
    assert auto == png(gen(ext, vae="tiny-sd1.vae.pt"))
    assert auto != png(gen(ext))
    # no tiny-sdxl.vae.* anywhere: the model's own
    assert png(gen(ext, model="tiny-sdxl", vae="Automatic")) == png(gen(ext, model="tiny-sdxl"))


def test_unknown_vaes_are_refused_and_vaes_are_listed(ext, models_dir):
    with pytest.raises(InvalidRequest) as error:
        ext.validate(job(vae="no-such-vae"))
    assert "tiny-other.safetensors" in str(error.value) and "tiny-other-folder" in str(error.value)
    with pytest.raises(InvalidRequest, match="offline"):
        ext.validate(job(vae="someone/some-vae"))

    listed = {entry.name: entry.path for entry in list_vaes(models_dir)}
    assert set(listed) == {"tiny-other.safetensors", "tiny-other-ckpt.pt", "tiny-other-folder", "tiny-sd1.vae.pt"}
    assert all(path.is_absolute() and path.exists() for path in listed.values())
    # jobs with different VAEs never share a pipeline call
    keys = {ext.batch_key(job(vae=name)) for name in (None, "tiny-other", "tiny-other-folder", "Automatic")}
    assert len(keys) == 4


# ------------------------------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("prompt", ["a red fox tinyone", "a red fox, tinymulti", "a red fox (TINYDIFF:1.1)"])
def test_an_embedding_in_the_prompt_changes_the_image_and_leaves_no_trace(ext, fresh, prompt):
    result = gen(ext, prompt=prompt)
    assert png(result) != png(gen(fresh, prompt=prompt))  # fresh reads the name as plain words
    assert result.prompt is None and result.not_applied == {}
    # the same prompt without it is what a fresh engine makes
    assert png(gen(ext, prompt="a red fox")) == png(gen(fresh, prompt="a red fox"))
    pipe = ext.models.get(None).pipe
    assert len(pipe.tokenizer) == VOCAB and pipe.text_encoder.get_input_embeddings().num_embeddings == VOCAB
    assert pipe.text_encoder.config.vocab_size == VOCAB


def test_an_embedding_in_the_negative_prompt_applies_too(ext, fresh):
    assert png(gen(ext, negative_prompt="tinyone")) != png(gen(fresh, negative_prompt="tinyone"))


def test_a_multi_vector_embedding_takes_all_its_vectors(ext):
    feature = next(f for f in ext.features if f.name == "embeddings")
    pipe = ext.models.get(None).pipe
    run = ext.start(job(prompt="tinymulti and tinyone"))
    words = count_tokens(pipe, "tinymulti")
    with feature.encoding(run, pipe):
        assert count_tokens(pipe, "tinymulti") == 3
        assert count_tokens(pipe, "(TinyMulti:1.2), tinyone") == 3 + 1 + 1
    assert count_tokens(pipe, "tinymulti") == words
    assert len(pipe.tokenizer) == VOCAB


def test_an_sdxl_pair_applies_and_an_sd1_embedding_is_skipped_on_sdxl(ext, fresh):
    pair = gen(ext, model="tiny-sdxl", prompt="a red fox tinyxl")
    assert png(pair) != png(gen(fresh, model="tiny-sdxl", prompt="a red fox tinyxl"))
    assert pair.not_applied == {}
    skipped = gen(ext, model="tiny-sdxl", prompt="a red fox tinyone")
    assert png(skipped) == png(gen(fresh, model="tiny-sdxl", prompt="a red fox tinyone"))
    assert "tinyone" in skipped.not_applied["embeddings"]
    assert png(gen(ext, model="tiny-sdxl")) == png(gen(fresh, model="tiny-sdxl"))
    pipe = ext.models.get("tiny-sdxl").pipe
    assert len(pipe.tokenizer) == len(pipe.tokenizer_2) == VOCAB


def test_a_wrong_width_embedding_is_skipped_noted_and_listed(ext, fresh, models_dir):
    result = gen(ext, prompt="a red fox tinywrong")
    assert png(result) == png(gen(fresh, prompt="a red fox tinywrong"))
    assert "tinywrong" in result.not_applied["embeddings"] and "skipped" in result.not_applied["embeddings"]

    listing = list_embeddings(models_dir, family_widths(ext.models.get(None).pipe))
    assert list(listing["loaded"]) == ["TinyDiff", "tinymulti", "tinyone"]  # sorted by lowercase name
    assert listing["loaded"]["tinyone"] == {"step": 500, "sd_checkpoint": "0123456789",
                                            "sd_checkpoint_name": "tiny-sd1", "shape": 32, "vectors": 1}
    assert listing["loaded"]["tinymulti"]["vectors"] == 3
    assert set(listing["skipped"]) == {"tinywrong", "tinyxl"}
    assert listing["skipped"]["tinyxl"] | {} == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                                  "shape": 96, "vectors": 2}
    xl = list_embeddings(models_dir, family_widths(ext.models.get("tiny-sdxl").pipe))
    assert list(xl["loaded"]) == ["tinyxl"]


def test_named_embeddings_are_appended_to_the_prompt_and_must_exist(ext):
    named = gen(ext, prompt="a red fox", embeddings=["TINYONE"])
    assert named.prompt == "a red fox, tinyone"
    assert png(named) == png(gen(ext, prompt="a red fox, tinyone"))
    # already in the prompt or the negative: nothing appended
    assert gen(ext, prompt="a red fox tinyone", embeddings=["tinyone"]).prompt is None
    assert gen(ext, negative_prompt="ugly, tinyone", embeddings=["tinyone"]).prompt is None
    with pytest.raises(InvalidRequest) as error:
        ext.validate(job(embeddings=["no-such-embedding"]))
    assert "no-such-embedding" in str(error.value) and "tinyone" in str(error.value)


def test_jobs_with_and_without_embeddings_stay_independent(ext, fresh):
    plain = png(gen(fresh, prompt="a red fox"))
    with_it = png(gen(ext, prompt="a red fox tinymulti"))
    for _ in range(2):
        assert png(gen(ext, prompt="a red fox")) == plain
        assert png(gen(ext, prompt="a red fox tinymulti")) == with_it
    # a VAE and an embedding together, then neither
    both = png(gen(ext, prompt="a red fox tinymulti", vae="tiny-other"))
    assert both not in (with_it, png(gen(ext, prompt="a red fox", vae="tiny-other")))
    assert png(gen(ext, prompt="a red fox")) == plain

"""The text features: translation (Job.translate, through a tiny random-weight mBART-50 built offline and loaded by
the real AutoTokenizer / AutoModelForSeq2SeqLM code) and enhancement (Job.enhance_prompt, a fixed rule over
enhance_phrases.json). Both rewrite the prompts before encoding; the Result shows what was encoded."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from backends.config import Features
from backends.job import InvalidRequest, Job
from backends.local.engine import LocalEngine
from backends.local.features.enhance import phrases, style_phrases
from tests.tiny_translator import write_tiny_translator

SIZE = 64


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def job(**kw) -> Job:
    base = dict(prompt="un chat noir assis sur la lune", negative_prompt="flou, mauvaise qualité", width=SIZE,
                height=SIZE, steps=2, seed=77, sampler="Euler", model="tiny-sd1")
    return Job(**{**base, **kw})


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    return write_tiny_translator(tmp_path_factory.mktemp("translator"))


@pytest.fixture(scope="module")
def text_engine(model_manager, translator_dir):
    return LocalEngine(model_manager, features=Features(translator=str(translator_dir)))


def items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


# ------------------------------------------------------------------------------------------------------ translation

def test_translation_changes_the_prompts_deterministically_and_the_image(text_engine):
    first = text_engine.generate(job(translate="fr_XX"))
    again = text_engine.generate(job(translate="fr_XX"))
    assert first.prompt is not None and first.prompt != job().prompt
    assert first.negative_prompt is not None and first.negative_prompt != job().negative_prompt
    assert (first.prompt, first.negative_prompt) == (again.prompt, again.negative_prompt)
    assert first.images[0].size == (SIZE, SIZE)
    assert png_bytes(first.images[0]) == png_bytes(again.images[0])
    plain = text_engine.generate(job())
    assert plain.prompt is None and plain.negative_prompt is None
    assert png_bytes(plain.images[0]) != png_bytes(first.images[0])


def test_translation_keeps_emphasis_weights_and_separators(text_engine):
    run = text_engine.start(job(prompt="(chat noir:1.3), [la lune], 42", negative_prompt="", translate="fr_XX"))
    assert re.fullmatch(r"\([^()]+:1\.3\), \[[^\[\]]+\], 42", run.prompt), run.prompt
    assert run.negative == ""


def test_auto_translates_chinese_and_leaves_english_alone(text_engine, model_manager):
    chinese = "月亮上的一只黑猫，高质量"
    result = text_engine.generate(job(prompt=chinese, negative_prompt="blurry", translate="auto"))
    assert result.prompt is not None and result.prompt != chinese
    assert "，" not in result.prompt and ", " in result.prompt  # the full-width comma is a separator, kept
    assert result.negative_prompt is None  # English: not sent to the model
    # Mixed: only the Chinese piece is translated, the English tags stay as written.
    mixed = text_engine.start(job(prompt="黑猫, masterpiece, best quality", translate="auto")).prompt
    assert mixed.endswith(", masterpiece, best quality") and not mixed.startswith("黑猫")
    # English under "auto" needs no translator at all.
    LocalEngine(model_manager).validate(job(prompt="a black cat on the moon", translate="auto"))


def test_without_a_translator_the_job_is_refused_naming_where_to_put_one(model_manager):
    bare = LocalEngine(model_manager)
    for code in ("fr_XX", "auto"):
        with pytest.raises(InvalidRequest, match="models/translator") as err:
            bare.validate(job(prompt="月亮上的猫" if code == "auto" else job().prompt, translate=code))
        assert "mbart-large-50-many-to-one-mmt" in str(err.value)


def test_an_unknown_language_code_lists_the_valid_ones(text_engine):
    with pytest.raises(InvalidRequest, match="fr_XX") as err:
        text_engine.validate(job(translate="xx_YY"))
    assert "auto" in str(err.value) and "zh_CN" in str(err.value)
    text_engine.validate(job(translate="FR_xx"))  # codes in any case


# ------------------------------------------------------------------------------------------------------ enhancement

def test_enhancement_adds_rule_chosen_phrases_once_and_the_services_negatives(text_engine):
    asked = job(prompt="portrait photo of a woman, (sharp focus:1.2)", negative_prompt="blurry, extra limbs",
                enhance_prompt=True)
    first = text_engine.generate(asked)
    again = text_engine.generate(job(prompt=asked.prompt, negative_prompt=asked.negative_prompt, enhance_prompt=True))
    assert (first.prompt, first.negative_prompt) == (again.prompt, again.negative_prompt)
    assert png_bytes(first.images[0]) == png_bytes(again.images[0])

    chosen = style_phrases(asked.prompt)
    assert "professional photography" in chosen  # a portrait photo gets the photographic phrases
    assert first.prompt.startswith(asked.prompt + ", ")
    assert all(phrase in items(first.prompt) for phrase in chosen if phrase != "sharp focus")
    assert "sharp focus" not in items(first.prompt)  # already there, with its weight
    assert len(items(first.prompt)) == len(set(items(first.prompt)))

    negative = items(first.negative_prompt)
    assert negative[:2] == ["blurry", "extra limbs"]
    assert set(phrases()["negative"]) <= set(negative) and negative.count("blurry") == 1
    assert len(negative) == len(set(negative))

    plain = text_engine.generate(job(prompt=asked.prompt, negative_prompt=asked.negative_prompt))
    assert png_bytes(plain.images[0]) != png_bytes(first.images[0])


@pytest.mark.parametrize("prompt, expected", [
    ("anime girl portrait", "detailed illustration"),  # illustration outranks the photographic "portrait"
    ("a mountain lake at dawn", "breathtaking scenery"),
    ("a teapot", "best quality"),  # no keyword: the default phrases
])
def test_the_rule_chooses_phrases_by_keyword(text_engine, prompt, expected):
    run = text_engine.start(job(prompt=prompt, negative_prompt="", enhance_prompt=True))
    assert expected in items(run.prompt)
    assert items(run.negative) == phrases()["negative"]


def test_translation_runs_before_enhancement(text_engine):
    run = text_engine.start(job(prompt="月亮上的猫", translate="auto", enhance_prompt=True))
    translated = text_engine.start(job(prompt="月亮上的猫", translate="auto")).prompt
    assert run.prompt.startswith(translated + ", ")


def test_the_next_job_without_them_is_what_a_fresh_engine_makes(text_engine, model_manager):
    text_engine.generate(job(translate="fr_XX", enhance_prompt=True))
    after = text_engine.generate(job())
    fresh = LocalEngine(model_manager).generate(job())
    assert png_bytes(after.images[0]) == png_bytes(fresh.images[0])
    assert after.prompt is None and after.negative_prompt is None and not after.not_applied

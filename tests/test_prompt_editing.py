"""Prompt editing `[from:to:when]`, alternation `[a|b]` and AND (composable diffusion): the parser's rules, and the
engine switching the conditioning at the right UNet call on the tiny SD1 and SDXL models."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backends.job import Hires, Job
from backends.local.engine import LocalEngine
from backends.local.prompt_schedule import (
    TWO_CALLS_PER_STEP,
    prompt_schedule,
    sampler_counting,
    split_and,
    text_at,
    when_step,
)
from backends.samplers import resolve_sampler

A = "a red fox in the snow"
B = "a blue car on a city road"
SIZE = 64


# ------------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize("prompt, n, expected", [
    ("a [cat:dog:2] b", 4, [(2, "a cat b"), (4, "a dog b")]),
    ("[cat:dog:0.5]", 4, [(2, "cat"), (4, "dog")]),  # "." → fraction: int(0.5 × 4)
    ("[cat:dog:0.5]", 10, [(5, "cat"), (10, "dog")]),
    ("[cat:dog:1]", 4, [(1, "cat"), (4, "dog")]),  # absolute: "from" for calls 0 and 1
    ("[cat:dog:1.0]", 4, [(4, "cat")]),  # the fraction 1.0: never switches
    ("[cat:dog:0]", 4, [(4, "dog")]),  # ≤ 0: at once
    ("[cat:dog:-3]", 4, [(4, "dog")]),
    ("[cat:dog:9]", 4, [(4, "cat")]),  # ≥ N: never
    ("[dog:2]", 4, [(2, ""), (4, "dog")]),
    ("[cat::2]", 4, [(2, "cat"), (4, "")]),
    ("[cat:dog: 2 ]", 4, [(2, "cat"), (4, "dog")]),
    ("a[b:[c:d:2]:1]e", 4, [(1, "abe"), (2, "ace"), (4, "ade")]),  # nesting
    ("[(fox:1.2):car:1] BREAK x", 4, [(1, "(fox:1.2) BREAK x"), (4, "car BREAK x")]),
    ("[cat|dog]", 4, [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog")]),
    ("[fe|]male", 3, [(1, "female"), (2, "male"), (3, "female")]),
    ("[a:b:c:3]", 4, [(4, "[a:b:c:3]")]),  # no valid construct: literal
    ("a [unbalanced", 4, [(4, "a [unbalanced")]),
    ("[a:b]", 4, [(4, "[a:b]")]),
    ("(x:1.2) [y] \\[a:b:1\\]", 4, [(4, "(x:1.2) [y] \\[a:b:1\\]")]),  # weights, down-weights and escapes stay
])
def test_schedules(prompt, n, expected):
    assert prompt_schedule(prompt, n) == expected


def test_alternation_and_lookup_per_call():
    schedule = prompt_schedule("[a|b|c]", 8)
    assert [text_at(schedule, c) for c in range(8)] == ["a", "a", "b", "c", "a", "b", "c", "a"]
    edit = prompt_schedule("[x:y:2]", 4)
    assert [text_at(edit, c) for c in range(5)] == ["x", "x", "x", "y", "y"]


def test_when_rules_and_the_hires_rule():
    assert when_step("0.25", 20) == 5 and when_step("5", 20) == 5 and when_step("50", 20) == 20
    # hires: fractions count from 1.0 over the hires calls, integers from the first pass's end
    assert when_step("1.5", 10, hires_base=20) == 5 and when_step("25", 10, hires_base=20) == 5
    assert when_step("0.5", 10, hires_base=20) < 0 and when_step("12", 10, hires_base=20) < 0


def test_and_parts_and_their_weights():
    assert split_and("a :1.2 AND b AND c: -0.5") == [("a", 1.2), (" b ", 1.0), (" c", -0.5)]
    assert split_and("cat and dog ANDROID") == [("cat and dog ANDROID", 1.0)]  # uppercase whole word only
    assert split_and("aspect 16:9") == [("aspect 16", 9.0)]  # A1111's edge: a trailing number is a weight


@pytest.mark.parametrize("sampler, n, scale", [
    ("Euler", 10, 1.0), ("DPM++ 2M", 10, 1.0),
    ("Heun", 20, 1.0), ("DPM2", 20, 1.0), ("DPM2 a", 20, 1.0), ("DPM++ SDE", 20, 1.0), ("Restart", 20, 1.0),
    ("DPM++ 2S a", 20, 2.0),  # second order in A1111, one call per step in its diffusers substitute
])
def test_second_order_samplers_count_twice(sampler, n, scale):
    assert sampler_counting(resolve_sampler(sampler), 10) == (n, scale)


@pytest.mark.parametrize("name", sorted(TWO_CALLS_PER_STEP | {"EulerDiscreteScheduler", "DPMSolverSinglestepScheduler"}))
def test_calls_per_step_match_diffusers(name):
    import diffusers

    scheduler = getattr(diffusers, name)()
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) == (7 if name in TWO_CALLS_PER_STEP else 4)


# ------------------------------------------------------------------------------------ the engine


class Quiet:
    interrupted = False
    skipped = False

    def report(self, *args, **kwargs):
        pass


@pytest.fixture
def latents(monkeypatch):
    """The latents after each step of the next generations (the step callback's view)."""
    seen: list = []
    original = LocalEngine._step_callback

    def recording(group, family):
        inner = original(group, family)

        def on_step_end(pipe, i, t, kwargs):
            seen.append(kwargs["latents"].clone())
            return inner(pipe, i, t, kwargs)

        return on_step_end

    monkeypatch.setattr(LocalEngine, "_step_callback", staticmethod(recording))
    return seen


def job(**kw) -> Job:
    base = {"prompt": A, "width": SIZE, "height": SIZE, "steps": 4, "seed": 77, "sampler": "Euler", "cfg_scale": 9.0}
    return Job(**{**base, **kw})


def run(engine, latents, **kw):
    latents.clear()
    result = engine.generate(job(**kw))
    return result, list(latents)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def steps_equal(a, b) -> list[bool]:
    return [bool((x - y).abs().max() < 1e-4) for x, y in zip(a, b)]


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_editing_switches_after_when(engine, latents, model):
    plain_a, steps_a = run(engine, latents, model=model)
    plain_b, _ = run(engine, latents, model=model, prompt=B)
    edited, steps_e = run(engine, latents, model=model, prompt=f"[{A}:{B}:1]")
    # calls 0 and 1 run A, calls 2 and 3 run B
    assert steps_equal(steps_a, steps_e) == [True, True, False, False]
    assert png(edited.images[0]) not in (png(plain_a.images[0]), png(plain_b.images[0]))
    # the fraction rule: 0.5 × 4 steps = call 2
    _, steps_f = run(engine, latents, model=model, prompt=f"[{A}:{B}:0.5]")
    assert steps_equal(steps_a, steps_f) == [True, True, True, False]
    # the next plain job is as before, and the UNet has its own forward again
    again, _ = run(engine, latents, model=model)
    assert png(again.images[0]) == png(plain_a.images[0])
    assert "forward" not in vars(engine.models.get(model).pipe.unet)


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_alternation_differs_from_both_prompts(engine, latents, model):
    a, steps_a = run(engine, latents, model=model)
    b, steps_b = run(engine, latents, model=model, prompt=B)
    alternating, steps_alt = run(engine, latents, model=model, prompt=f"[{A}|{B}]")
    assert steps_equal(steps_a, steps_alt) == [True, True, False, False]  # A, A, B, A
    assert not any(steps_equal(steps_b, steps_alt))
    assert png(alternating.images[0]) not in (png(a.images[0]), png(b.images[0]))


def test_second_order_sampler_counts_calls(engine, latents):
    """Heun: N = 2 × steps and the counter counts UNet calls, so [A:B:0.5] switches half-way through the calls."""
    _, steps_a = run(engine, latents, sampler="Heun", steps=3)  # 5 calls
    _, steps_e = run(engine, latents, sampler="Heun", steps=3, prompt=f"[{A}:{B}:0.5]")  # calls 0..3 run A
    assert steps_equal(steps_a, steps_e) == [True, True, True, True, False]


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_and_follows_the_composable_formula(engine, latents, model):
    plain, _ = run(engine, latents, model=model, prompt="a")
    halves, _ = run(engine, latents, model=model, prompt="a :0.5 AND a :0.5")
    # u + cfg·(0.5 (c − u) + 0.5 (c − u)) = u + cfg (c − u)
    assert np.abs(pixels(halves.images[0]) - pixels(plain.images[0])).max() <= 1
    composed, _ = run(engine, latents, model=model, prompt=f"{A} AND {B} :0.5")
    joined, _ = run(engine, latents, model=model, prompt=f"{A}, {B}")
    alone, _ = run(engine, latents, model=model)
    for other in (joined, alone):
        assert np.abs(pixels(composed.images[0]) - pixels(other.images[0])).max() > 1
    # the next plain job is unaffected
    assert png(run(engine, latents, model=model, prompt="a")[0].images[0]) == png(plain.images[0])


def test_negative_prompt_schedule(engine, latents):
    _, steps_x = run(engine, latents, negative_prompt=B)
    _, steps_s = run(engine, latents, negative_prompt=f"[{B}:ugly, blurry:1]")
    assert steps_equal(steps_x, steps_s) == [True, True, False, False]
    # no AND in the negative prompt: the word stays text (one plain negative, no composition)
    literal = engine.start(job(negative_prompt="x AND y"))
    engine.run_batch([(literal, Quiet())])
    assert literal.prompt_plan is None


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_jobs_with_different_schedules_share_a_call(engine, model):
    jobs = [job(model=model, prompt=f"[{A}:{B}:1]", seed=5), job(model=model, prompt=f"[{B}|{A}] AND {A} :0.3", seed=6),
            job(model=model, prompt=A, seed=7)]
    runs = [engine.start(j) for j in jobs]
    engine.run_batch([(r, Quiet()) for r in runs])
    assert all(r.batched == 3 for r in runs)  # one call for all three
    for r, j in zip(runs, jobs):
        alone = engine.generate(j)
        assert np.abs(pixels(r.images[0]) - pixels(alone.images[0])).max() <= 2


def test_plain_prompts_take_the_ordinary_path(engine):
    r = engine.start(job(prompt="a (fox:1.2) [in] the snow BREAK x"))
    engine.run_batch([(r, Quiet())])
    assert r.prompt_plan is None and r.hires_plan is None


def test_hires_pass_follows_the_schedule(engine, latents):
    hires = Hires(width=2 * SIZE, height=2 * SIZE, upscaler="Latent", steps=4, denoising_strength=0.6)
    plain, steps_p = run(engine, latents, hires=hires)
    edited, steps_e = run(engine, latents, hires=hires, prompt=f"[{A}:{B}:1.5]")  # B from mid-hires
    assert edited.images[0].size == (2 * SIZE, 2 * SIZE)
    # pass 1: 1.5 × 4 clamps to 4, never; hires: int((1.5 − 1) × 4) = call 2, so hires call 3 runs B
    assert steps_equal(steps_p, steps_e) == [True] * 4 + [True, True, True, False]
    composed, _ = run(engine, latents, hires=hires, prompt=f"{A} AND {B}")
    assert png(composed.images[0]) != png(plain.images[0])


def test_constructs_that_never_switch_are_read(engine):
    """`[A:B:9]` with 4 steps is A throughout: the same image as A, not the bracketed text."""
    plain = engine.generate(job())
    never = engine.generate(job(prompt=f"[{A}:{B}:9]"))
    weighted_one = engine.generate(job(prompt=f"{A} :1"))
    assert png(never.images[0]) == png(plain.images[0]) == png(weighted_one.images[0])


def test_schedule_and_and_under_panorama_windows(engine, latents):
    """The windowed UNet (features/panorama.py) calls the UNet again per window: the schedule counts each guidance
    call once and the windows get its conditioning."""
    wide = {"width": SIZE * 2 + 16, "height": SIZE, "panorama": True}
    _, steps_a = run(engine, latents, **wide)
    edited, steps_e = run(engine, latents, prompt=f"[{A}:{B}:1] AND {A} :0.5", **wide)
    assert edited.images[0].size == (SIZE * 2 + 16, SIZE)
    assert not all(steps_equal(steps_a, steps_e))
    assert "forward" not in vars(engine.models.get("tiny-sd1").pipe.unet)

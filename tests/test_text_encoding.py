"""A1111-style long/weighted prompt encoding (docs/reference/a1111_api.md §6.3) on the tiny random-weight pipelines."""

import pytest
import torch

from backends.local.text_encoding import CHUNK_LENGTH, count_tokens, encode_prompts, pack_chunks
from backends.local.tiny import build_tiny_pipeline

# 40 × ("wordN red," = 3-4 tokens) ≈ 150 tokens, then more: about 200 tokens, 3 chunks.
LONG = " ".join(f"item{i} red," for i in range(40)) + " a small cat sitting on a green mat under the moon"


@pytest.fixture(scope="module")
def sd1():
    return build_tiny_pipeline("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return build_tiny_pipeline("sdxl")


def chunks_of(embeds: torch.Tensor) -> list[torch.Tensor]:
    """(1, 77·k, C) → k tensors of (77, C)."""
    return list(embeds[0].split(77, dim=0))


def encode1(pipe, prompt, negative="", **kw):
    return encode_prompts(pipe, [prompt], [negative], **kw)


# ------------------------------------------------------------------------------------ chunk packing (no model)

COMMA = 9


def test_pack_short_and_empty():
    assert pack_chunks([([1, 2, 3], 1.0)], COMMA) == [([1, 2, 3], [1.0, 1.0, 1.0])]
    assert pack_chunks([], COMMA) == [([], [])]
    assert pack_chunks([([], 1.0)], COMMA) == [([], [])]


def test_pack_exactly_75_is_one_chunk_and_76_is_two():
    assert len(pack_chunks([([1] * 75, 1.0)], COMMA)) == 1
    assert [len(c[0]) for c in pack_chunks([([1] * 76, 1.0)], COMMA)] == [75, 1]


def test_pack_keeps_weights_with_tokens():
    (ids, weights), (ids2, weights2) = pack_chunks([([1] * 74, 1.0), ([2, 3], 1.5)], COMMA)
    assert ids[-1] == 2 and weights[-1] == 1.5 and ids2 == [3] and weights2 == [1.5]


def test_pack_break():
    assert pack_chunks([([1], 1.0), None, ([2], 1.0)], COMMA) == [([1], [1.0]), ([2], [1.0])]
    assert pack_chunks([None, ([2], 1.0)], COMMA) == [([], []), ([2], [1.0])]  # a leading BREAK: empty chunk
    assert pack_chunks([([1], 1.0), None], COMMA) == [([1], [1.0])]  # a trailing BREAK adds nothing
    assert pack_chunks([([1], 1.0), None, None, ([2], 1.0)], COMMA) == [([1], [1.0]), ([], []), ([2], [1.0])]


def test_pack_comma_backtrack_moves_the_phrase_after_the_last_comma():
    tokens = [1] * 60 + [COMMA] + [2] * 20  # comma at index 60: 75 - 60 = 15 ≤ 20
    (first, _), (second, _) = pack_chunks([(tokens, 1.0)], COMMA)
    assert first == [1] * 60 + [COMMA] and second == [2] * 20


def test_pack_no_backtrack_when_the_comma_is_too_far_back():
    tokens = [1] * 50 + [COMMA] + [2] * 30  # 75 - 50 = 25 > 20: hard cut at 75
    (first, _), (second, _) = pack_chunks([(tokens, 1.0)], COMMA)
    assert len(first) == 75 and second == [2] * 6


def test_pack_backtrack_only_when_the_chunk_overflows():
    tokens = [1] * 60 + [COMMA] + [2] * 14  # exactly 75 tokens: nothing moves
    assert pack_chunks([(tokens, 1.0)], COMMA) == [(tokens, [1.0] * 75)]


# ------------------------------------------------------------------------------------ shapes and chunks


@pytest.mark.parametrize("family,width", [("sd1", 32), ("sdxl", 96)])
def test_shapes_pad_batch_and_negative_to_the_longest(family, width, sd1, sdxl):
    pipe = {"sd1": sd1, "sdxl": sdxl}[family]
    out = encode_prompts(pipe, ["a cat", LONG], ["blurry", "ugly"])
    assert out["prompt_embeds"].shape == (2, 77 * 3, width)
    assert out["negative_prompt_embeds"].shape == (2, 77 * 3, width)
    if family == "sdxl":
        assert out["pooled_prompt_embeds"].shape == (2, 64)
        assert out["negative_pooled_prompt_embeds"].shape == (2, 64)
    else:
        assert set(out) == {"prompt_embeds", "negative_prompt_embeds"}


def test_long_prompt_is_not_truncated(sd1):
    n = count_tokens(sd1, LONG)
    assert 150 < n <= 225
    base = encode1(sd1, LONG)["prompt_embeds"]
    assert base.shape[1] == 77 * 3
    changed = encode1(sd1, LONG.replace("the moon", "the sun"))["prompt_embeds"]  # words after token 150
    a, b = chunks_of(base), chunks_of(changed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # chunks are encoded independently
    assert not torch.allclose(a[2], b[2])


def test_break_starts_a_new_chunk(sd1):
    both = chunks_of(encode1(sd1, "a red cat BREAK a blue dog")["prompt_embeds"])
    assert len(both) == 2
    torch.testing.assert_close(both[0], encode1(sd1, "a red cat")["prompt_embeds"][0])
    torch.testing.assert_close(both[1], encode1(sd1, "a blue dog")["prompt_embeds"][0])


def test_padding_chunks_are_the_empty_prompt(sd1):
    out = encode_prompts(sd1, ["a cat", LONG], ["", ""])
    empty = encode1(sd1, "")["prompt_embeds"][0]
    short = chunks_of(out["prompt_embeds"][:1])
    torch.testing.assert_close(short[0], encode1(sd1, "a cat")["prompt_embeds"][0])
    torch.testing.assert_close(short[1], empty)
    torch.testing.assert_close(short[2], empty)


def test_batch_rows_do_not_depend_on_each_other(sd1):
    alone = encode1(sd1, "(a cat:1.4) on a mat", "blurry")
    mixed = encode_prompts(sd1, ["(a cat:1.4) on a mat", "(a dog:0.6), night"], ["blurry", "ugly"])
    torch.testing.assert_close(mixed["prompt_embeds"][:1], alone["prompt_embeds"])
    torch.testing.assert_close(mixed["negative_prompt_embeds"][:1], alone["negative_prompt_embeds"])


def test_extra_network_tags_are_not_encoded(sd1):
    torch.testing.assert_close(encode1(sd1, "a cat <lora:film:0.8>")["prompt_embeds"],
                               encode1(sd1, "a cat")["prompt_embeds"])


# ------------------------------------------------------------------------------------ weights


def test_changing_a_weight_changes_the_embeddings(sd1):
    a = encode1(sd1, "a (cat:1.3) on a mat")["prompt_embeds"]
    b = encode1(sd1, "a (cat:1.2) on a mat")["prompt_embeds"]
    assert not torch.allclose(a, b)


def test_emphasis_restores_the_chunk_mean(sd1):
    plain = encode1(sd1, "a cat on a mat")["prompt_embeds"]
    weighted = encode1(sd1, "a (cat:1.5) on a [mat]")["prompt_embeds"]
    assert not torch.allclose(plain, weighted)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4, abs=1e-6)


def test_weight_one_equals_plain_text(sd1):
    torch.testing.assert_close(encode1(sd1, "a (cat:1.0) on a mat")["prompt_embeds"],
                               encode1(sd1, "a cat on a mat")["prompt_embeds"], rtol=0, atol=0)


def test_weighting_off_reads_brackets_as_text(sd1):
    off = encode1(sd1, "a (cat) BREAK x", weighting=False)["prompt_embeds"]
    assert off.shape[1] == 77  # no BREAK either: A1111's "None" emphasis
    assert not torch.allclose(off, encode1(sd1, "a (cat) BREAK x")["prompt_embeds"][:, :77])
    with torch.no_grad():
        ref, _ = sd1.encode_prompt("a (cat) BREAK x", "cpu", 1, True, "")
    torch.testing.assert_close(off, ref, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ parity with diffusers


def test_sd1_matches_diffusers_encode_prompt(sd1):
    prompt, negative = "a photo of a cat, sitting on a mat", "blurry, lowres"
    ours = encode1(sd1, prompt, negative)
    with torch.no_grad():
        ref, neg = sd1.encode_prompt(prompt, "cpu", 1, True, negative)
    torch.testing.assert_close(ours["prompt_embeds"], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["negative_prompt_embeds"], neg, rtol=0, atol=1e-6)


def test_sdxl_matches_diffusers_encode_prompt(sdxl):
    prompt, negative = "a photo of a cat, sitting on a mat", "blurry, lowres"
    ours = encode1(sdxl, prompt, negative)
    with torch.no_grad():
        ref, neg, pooled, neg_pooled = sdxl.encode_prompt(prompt, None, "cpu", 1, True, negative)
    torch.testing.assert_close(ours["prompt_embeds"], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["negative_prompt_embeds"], neg, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["pooled_prompt_embeds"], pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["negative_pooled_prompt_embeds"], neg_pooled, rtol=0, atol=1e-6)


def test_sdxl_empty_negative_is_zeros_as_diffusers(sdxl):
    assert sdxl.config.force_zeros_for_empty_prompt
    ours = encode_prompts(sdxl, ["a cat", LONG], ["", "  "])
    assert not ours["negative_prompt_embeds"].any() and not ours["negative_pooled_prompt_embeds"].any()
    with torch.no_grad():
        _, neg, _, neg_pooled = sdxl.encode_prompt("a cat", None, "cpu", 1, True, None)
    torch.testing.assert_close(ours["negative_prompt_embeds"][:1, :77], neg, rtol=0, atol=0)


def test_sd1_empty_negative_is_encoded(sd1):
    ours = encode1(sd1, "a cat", "")
    assert ours["negative_prompt_embeds"].abs().sum() > 0


def test_sdxl_pooled_comes_from_the_first_chunk(sdxl):
    first = "a red cat on a mat"
    ours = encode1(sdxl, f"{first} BREAK a blue dog")
    torch.testing.assert_close(ours["pooled_prompt_embeds"], encode1(sdxl, first)["pooled_prompt_embeds"])


# ------------------------------------------------------------------------------------ clip skip


def test_sd1_clip_skip(sd1):
    prompt = "a photo of a cat"
    one = encode1(sd1, prompt, clip_skip=1)["prompt_embeds"]
    two = encode1(sd1, prompt, clip_skip=2)["prompt_embeds"]
    assert not torch.allclose(one, two)
    # A1111: hidden_states[-2], then the final layer norm (diffusers' clip_skip=1 does the same).
    ids = sd1.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = sd1.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = sd1.text_encoder.final_layer_norm(hidden)
    torch.testing.assert_close(two, expected, rtol=0, atol=1e-6)


def test_sdxl_clip_skip_matches_diffusers(sdxl):
    prompt = "a photo of a cat"
    one = encode1(sdxl, prompt, clip_skip=1)
    two = encode1(sdxl, prompt, "blurry", clip_skip=2)
    assert not torch.allclose(one["prompt_embeds"], two["prompt_embeds"])
    with torch.no_grad():  # diffusers counts from the penultimate layer: our 2 is its 1
        ref, _, pooled, _ = sdxl.encode_prompt(prompt, None, "cpu", 1, True, "blurry", clip_skip=1)
    torch.testing.assert_close(two["prompt_embeds"], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(two["pooled_prompt_embeds"], pooled, rtol=0, atol=1e-6)  # pooled ignores clip skip


def test_clip_skip_past_the_depth_is_clamped(sd1):
    assert encode1(sd1, "a cat", clip_skip=99)["prompt_embeds"].shape == (1, 77, 32)
    torch.testing.assert_close(encode1(sd1, "a cat", clip_skip=0)["prompt_embeds"],
                               encode1(sd1, "a cat", clip_skip=1)["prompt_embeds"])


# ------------------------------------------------------------------------------------ count_tokens, errors


def test_count_tokens(sd1):
    assert count_tokens(sd1, "a photo of a cat") == 5
    assert count_tokens(sd1.tokenizer, "a photo of a cat") == 5
    assert count_tokens(sd1, "a (photo:1.3) of [a] cat <lora:x:1>") == 5
    assert count_tokens(sd1, "") == 0
    assert count_tokens(sd1, "a cat BREAK dog") == CHUNK_LENGTH + 1


def test_mismatched_lengths_raise(sd1):
    with pytest.raises(ValueError):
        encode_prompts(sd1, ["a", "b"], ["c"])
    with pytest.raises(ValueError):
        encode_prompts(sd1, [], [])


# ------------------------------------------------------------------------------------ into the pipeline


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_pipeline_runs_with_long_weighted_embeddings(family, sd1, sdxl):
    pipe = {"sd1": sd1, "sdxl": sdxl}[family]
    embeds = encode_prompts(pipe, ["(a cat:1.2) BREAK " + LONG] * 2, ["blurry", ""])
    out = pipe(**embeds, width=64, height=64, num_inference_steps=2, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
    assert out.images.shape == (2, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(out.images)).all()


def test_short_prompt_gives_the_same_image_as_diffusers(sd1):
    prompt, negative = "a photo of a cat", "blurry"
    kw = dict(width=64, height=64, num_inference_steps=2, output_type="np")
    ours = sd1(**encode1(sd1, prompt, negative), generator=torch.Generator().manual_seed(3), **kw).images
    ref = sd1(prompt=prompt, negative_prompt=negative, generator=torch.Generator().manual_seed(3), **kw).images
    assert abs(ours - ref).max() < 1e-5

"""A tiny random-weight mBART-50 translator for offline tests of `backends/local/features/translate.py`.

Built the way a real one is laid out on disk (`save_pretrained` of an `MBartForConditionalGeneration` and an
`MBart50Tokenizer`), so the feature loads it through `AutoTokenizer` / `AutoModelForSeq2SeqLM` as it would
facebook/mbart-large-50-many-to-one-mmt. The tokenizer's Unigram vocabulary is made here from a few sentences
(transformers 5's `MBart50Tokenizer` takes such a vocabulary and adds the 52 language codes itself, no sentencepiece
needed). Weights are seeded: every build is identical. Its "translations" are word salad, but
deterministic word salad, which is all a test of the plumbing needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

SEED = 0
# A few sentences in the scripts the tests use, so their characters are in the vocabulary (not <unk>).
CORPUS = [
    "un chat noir assis sur la lune, portrait d'une femme, haute qualité",
    "a black cat sitting on the moon, portrait of a woman, high quality",
    "月亮上的一只黑猫，一个女人的肖像，高质量",
    "чёрный кот на луне, портрет женщины",
    "ein schwarzer Hund im Wald, Landschaft bei Sonnenuntergang",
]


def _tokenizer() -> MBart50Tokenizer:
    # A Unigram vocabulary written out, not trained: the tokenizers trainer is not deterministic. Whole words are
    # likelier than letters, so known words stay one piece. Letters only: the model can never write a bracket or
    # a comma, so what a test finds around a translated piece is the feature's work. <unk>, <s>, </s> first:
    # MBart50Tokenizer reads a vocabulary in sentencepiece order and reorders it to fairseq's.
    words = sorted({word for line in CORPUS for word in re.findall(r"[^\W\d_]+", line)})
    letters = sorted({ch for word in words for ch in word})
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("\u2581", -3.0)]
    vocab += [(ch, -5.0) for ch in letters] + [("\u2581" + word, -2.0) for word in words]
    return MBart50Tokenizer(vocab=vocab, src_lang="en_XX", tgt_lang="en_XX")


def build_tiny_translator() -> tuple[MBartForConditionalGeneration, MBart50Tokenizer]:
    tokenizer = _tokenizer()
    config = MBartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, init_std=0.5)
    torch.manual_seed(SEED)
    model = MBartForConditionalGeneration(config).eval()
    # Random weights could pick </s> or a language code first and "translate" to an empty string: keep the special
    # tokens out of reach, so every output is real (if meaningless) text of max_new_tokens tokens.
    with torch.no_grad():
        model.final_logits_bias[0, tokenizer.all_special_ids] = -1e4
    return model, tokenizer


def write_tiny_translator(folder: Path) -> Path:
    """The model and its tokenizer saved into `folder` (one folder, as models/translator/ holds them)."""
    model, tokenizer = build_tiny_translator()
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

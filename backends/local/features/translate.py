"""Prompt translation (`Job.translate`, ModelsLab's `multi_lingual`): the prompt and negative prompt are translated
to English before they are encoded, by a seq2seq model loaded once from `[features] translator` or
`models/translator/` (mBART-50 many-to-English, e.g. facebook/mbart-large-50-many-to-one-mmt, or any folder
`AutoModelForSeq2SeqLM` loads). `Job.translate` is the source language as an mBART-50 code ("fr_XX", "zh_CN", ...:
the list in docs/reference/seeds/004_48e4500ad6959eba.txt, ModelsLab's text2img document) or "auto".

What is translated: the prompt is cut at its A1111 syntax — brackets `()[]{}`, weights `:1.2`, `:` and `|` of prompt
editing, escapes `\\(`, BREAK / AND, and the separators `,` `;` new lines (full-width `，、；。` too, written back as
their ASCII forms) — and only the text between those cuts is translated, each piece alone, greedily. So
"(黑猫:1.3)，月亮" becomes "(black cat:1.3), moon": emphasis, weights and tag lists keep working after translation.
A piece without letters (a number, an emoji) is kept as it is.

"auto": each piece's language is guessed from its script (the most frequent script among its letters, kana before
Han: Japanese mixes both); a Latin-script piece takes the language whose common words the whole text uses most
(`LATIN_WORDS`), and English — so: not translated — when none of them occur, since most Latin-script prompts are
English tag lists. An "en_XX" piece is never sent to the model; "auto" on English text needs no translator at all.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import Counter

from ...job import InvalidRequest, Job
from .base import Feature

log = logging.getLogger(__name__)

AUTO = "auto"
ENGLISH = "en_XX"
# mBART-50's languages, as ModelsLab lists them for multi_lingual (its text2img document:
# docs/reference/seeds/004_48e4500ad6959eba.txt).
MBART50_CODES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT", "ja_XX",
    "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK", "tr_TR", "vi_VN",
    "zh_CN", "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK", "ml_IN",
    "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN", "th_TH", "tl_XX", "uk_UA",
    "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)
_CODES = {code.lower(): code for code in (*MBART50_CODES, AUTO)}

# "auto": a script (the first word of a letter's Unicode name) → the language it most likely writes. A script many
# languages share goes to its most common one: Cyrillic → Russian, Arabic → Arabic, Devanagari → Hindi.
SCRIPT_CODES = {
    "CJK": "zh_CN", "HIRAGANA": "ja_XX", "KATAKANA": "ja_XX", "HANGUL": "ko_KR", "CYRILLIC": "ru_RU",
    "ARABIC": "ar_AR", "DEVANAGARI": "hi_IN", "HEBREW": "he_IL", "THAI": "th_TH", "GEORGIAN": "ka_GE",
    "BENGALI": "bn_IN", "GUJARATI": "gu_IN", "TAMIL": "ta_IN", "TELUGU": "te_IN", "MALAYALAM": "ml_IN",
    "SINHALA": "si_LK", "MYANMAR": "my_MM", "KHMER": "km_KH",
}
# "auto" on Latin script: common short words of each language; the one whose words occur most wins, English on a
# tie (first), and English when none occur.
LATIN_WORDS = {
    "en_XX": "the a an of and with in on at is are by from under",
    "fr_XX": "le la les un une des du de et avec sur dans est au aux sous",
    "de_DE": "der die das ein eine einer und mit im auf ist den dem des unter",
    "es_XX": "el la los las un una y con en del es por bajo",
    "it_IT": "il lo la gli le un una e con di del della nel sul sotto",
    "pt_XX": "o a os as um uma e com em do da no na sob",
    "nl_XX": "de het een en met op in van is onder",
    "pl_PL": "i w z na pod jest oraz",
}
_LATIN_SETS = {code: set(words.split()) for code, words in LATIN_WORDS.items()}

# The cuts: escapes, weights, BREAK/AND, brackets, prompt-editing marks and separators (module docstring).
_SYNTAX = re.compile(r"(\\.|:\s*-?\d*\.?\d+|\bBREAK\b|\bAND\b|[()\[\]{}|:,;\n，、；。])")
_FULL_WIDTH = {"，": ", ", "、": ", ", "；": "; ", "。": ". "}
MAX_INPUT_TOKENS = 256
MAX_NEW_TOKENS = 256
BATCH = 16  # pieces per generate call: bounds the translator's memory on a long tag list

INSTALL = ("put an mBART-50 many-to-English model, e.g. facebook/mbart-large-50-many-to-one-mmt, or any "
           "AutoModelForSeq2SeqLM folder in models/translator/ ({where}), or set [features] translator")


def language_code(value: str) -> str | None:
    """`value` as an mBART-50 code or "auto" (any case), None when it is neither."""
    return _CODES.get(str(value).strip().lower())


def script_code(text: str) -> str | None:
    """The language `text`'s letters suggest by their script (SCRIPT_CODES), "latin", or None (no letters)."""
    scripts = Counter()
    for ch in text:
        if ch.isalpha():
            word = re.match(r"[A-Z]+", unicodedata.name(ch, "UNKNOWN"))
            scripts[SCRIPT_CODES.get(word.group(0) if word else "", "latin")] += 1
    if not scripts:
        return None
    if "ja_XX" in scripts:  # kana anywhere: Japanese, whose Han characters would otherwise count as Chinese
        return "ja_XX"
    return scripts.most_common(1)[0][0]


def latin_code(text: str) -> str:
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {code: sum(word in common for word in words) for code, common in _LATIN_SETS.items()}
    best = max(scores, key=lambda code: scores[code])  # max keeps the first on a tie: English
    return best if scores[best] else ENGLISH


def split_prompt(text: str) -> list[str]:
    """`text` cut at its syntax: even items are text (maybe empty), odd items the syntax between them."""
    return _SYNTAX.split(text)


def plan(text: str, code: str) -> dict[int, str]:
    """Which pieces of `split_prompt(text)` to translate, and from which language: {index: code}."""
    pieces = split_prompt(text)
    latin = latin_code(text) if code == AUTO else code
    todo = {}
    for i in range(0, len(pieces), 2):
        script = script_code(pieces[i])
        if script is None:
            continue
        source = code if code != AUTO else (latin if script == "latin" else script)
        if source != ENGLISH:
            todo[i] = source
    return todo


class Translate(Feature):
    name = "translate"

    def __init__(self, setup):
        super().__init__(setup)
        self._lock = threading.Lock()
        self._loaded = None  # (tokenizer, model), loaded by the first job that needs it

    def wanted(self, job: Job) -> bool:
        return bool(job.translate)

    def key(self, job: Job) -> None:
        return None  # acts on this job's own prompts only: batch-mates may differ

    def check(self, job: Job) -> None:
        code = language_code(job.translate)
        if code is None:
            raise InvalidRequest(f"translate: unknown language {job.translate!r}; valid: {AUTO}, "
                                 f"{', '.join(MBART50_CODES)}")
        if not any(plan(text, code) for text in (job.prompt, job.negative_prompt) if text):
            return  # English already: nothing to translate, no model needed
        path = self._path()
        if path is None or not path.is_dir():
            where = path or self.setup.models_dir / "translator"
            raise InvalidRequest(f"translate: no translator installed; {INSTALL.format(where=where)}")

    def rewrite(self, run) -> None:
        code = language_code(run.job.translate)
        texts = {"prompt": run.prompt, "negative": run.negative}
        plans = {key: plan(text, code) for key, text in texts.items() if text}
        wanted = list(dict.fromkeys((split_prompt(texts[key])[i].strip(), source)
                                    for key, todo in plans.items() for i, source in todo.items()))
        if not wanted:
            return
        try:
            done = self._translate(wanted)
        except (OSError, ValueError) as exc:  # a broken or partial model folder: the job runs untranslated
            log.warning("translator failed: %s", exc)
            run.not_applied["translate"] = f"the translator in {self._path()} could not run: {exc}"
            return
        for key, todo in plans.items():
            pieces = split_prompt(texts[key])
            for i, source in todo.items():
                core = pieces[i].strip()
                pieces[i] = pieces[i].replace(core, done[(core, source)], 1)  # its spaces around kept
            text = "".join(_FULL_WIDTH.get(piece, piece) for piece in pieces)
            setattr(run, key, re.sub(r" {2,}", " ", text).strip())

    # ---------------------------------------------------------------------------------------------- the model

    def _path(self):
        return self.setup.config.model_path("translator", self.setup.models_dir)

    def _model(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            path = self._path()
            # float32 on a CPU: half precision there is slow or lossy, and greedy decoding should not flip on it
            dtype = torch.float32 if self.setup.device.type == "cpu" else self.setup.dtype
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype).to(self.setup.device).eval()
            log.info("translator loaded from %s", path)
            self._loaded = tokenizer, model
        return self._loaded

    def _translate(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """{(text, source code): English} for each of `wanted`, one batch per source language. Locked: the model
        loads once, and `src_lang` is tokenizer state."""
        with self._lock:
            return self._generate(wanted)

    def _generate(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        import torch

        tokenizer, model = self._model()
        vocab = tokenizer.get_vocab()
        extra = {"forced_bos_token_id": vocab[ENGLISH]} if ENGLISH in vocab else {}  # mBART: the target's code
        out = {}
        for source in dict.fromkeys(code for _, code in wanted):
            texts = [text for text, code in wanted if code == source]
            if hasattr(tokenizer, "src_lang") and source in vocab:  # mBART-50: the source's code leads the input
                tokenizer.src_lang = source
            for start in range(0, len(texts), BATCH):
                chunk = texts[start : start + BATCH]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                max_length=MAX_INPUT_TOKENS).to(model.device)
                new_tokens = min(MAX_NEW_TOKENS, 2 * enc["input_ids"].shape[1] + 8)
                with torch.inference_mode():
                    ids = model.generate(**enc, max_new_tokens=new_tokens, num_beams=1, do_sample=False, **extra)
                for text, english in zip(chunk, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                    out[(text, source)] = _tidy(text, english)
        return out


def _tidy(source: str, english: str) -> str:
    """The model's sentence as a prompt piece: brackets it writes dropped (they would change the emphasis), the
    full stop it adds to a fragment too; never empty."""
    english = re.sub(r"[()\[\]{}]", "", english).strip()
    if english.endswith(".") and not source.endswith((".", "。")):
        english = english[:-1].rstrip()
    return english or source

"""A1111-style prompt encoding for diffusers pipelines (docs/reference/a1111_api.md §6.3).

Prompts of any length, `(weights)`, `[down-weights]` and `BREAK`, turned into the `prompt_embeds` kwargs of a
diffusers SD1/SD2/SDXL pipeline call:

* each weighted run is tokenized on its own (no BOS/EOS, no truncation; a multi-vector textual-inversion token
  becomes all its vectors' tokens) and the tokens are packed into chunks of 75; `BREAK` closes the current chunk;
  when a chunk is full and the last comma is within 20 tokens of its end, the tokens after that comma move to the
  next chunk;
* each chunk becomes `[BOS] tokens [EOS] [PAD...]` (77 ids; this is also what A1111 feeds CLIP) and is encoded
  on its own; the chunk outputs are concatenated on the token axis: (B, 77·k, C);
* emphasis "Original": every token vector is multiplied by its weight, then the chunk is rescaled so that its
  mean equals the unweighted mean.

One deliberate difference from A1111: the mean is restored per prompt and chunk, where A1111 takes it over the
whole batch. The two agree whenever a batch repeats one prompt (A1111's batch_size), and ours keeps an image
independent of whichever other jobs share its batch.
"""

from __future__ import annotations

import torch

from .prompt_parser import is_break, parse_prompt_attention, strip_extra_networks

CHUNK_LENGTH = 75  # content tokens per chunk; BOS + 75 + EOS = CLIP's 77 positions
COMMA_BACKTRACK = 20  # A1111 `comma_padding_backtrack`

Chunk = tuple[list[int], list[float]]  # content token ids (≤ 75) and their weights
Piece = tuple[list[int], float] | None  # the tokens of one weighted run; None is a BREAK


# ------------------------------------------------------------------------------------ tokens → chunks


def _runs(prompt: str, weighting: bool) -> list[tuple[str, float]]:
    text, _networks = strip_extra_networks(prompt)  # tags are the engine's business, never text
    # weighting=False is A1111's "None" emphasis: brackets, and BREAK too, are just words.
    return parse_prompt_attention(text) if weighting else [(text, 1.0)]


def _tokenize(tokenizer, prompts: list[str], weighting: bool) -> list[list[Piece]]:
    """The pieces of every prompt, with one tokenizer call for all the runs of all the prompts."""
    runs = [_runs(p, weighting) for p in prompts]
    texts = [text for rs in runs for text, w in rs if not is_break((text, w))]
    # verbose=False: runs longer than 77 tokens are expected here, not worth HF's warning.
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids if texts else []
    vectors = _vector_ids(tokenizer)
    if vectors:
        ids = [[v for token in run for v in vectors.get(token, (token,))] for run in ids]
    ids = iter(ids)
    return [[None if is_break(r) else (next(ids), r[1]) for r in rs] for rs in runs]


def _vector_ids(tokenizer) -> dict[int, list[int]]:
    """Textual-inversion tokens of several vectors (features/embeddings.py): diffusers' load_textual_inversion adds
    one token per vector, `name`, `name_1` … `name_{n-1}`, while a prompt names only `name`, so its id stands for
    all n ids (what diffusers' `maybe_convert_prompt` does to the text, which misses mixed-case names)."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    groups = {}
    for token, first in added.items():
        ids = [first]
        while f"{token}_{len(ids)}" in added:
            ids.append(added[f"{token}_{len(ids)}"])
        if len(ids) > 1:
            groups[first] = ids
    return groups


def _comma_id(tokenizer) -> int | None:
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    return None if comma is None or comma == tokenizer.unk_token_id else comma


def pack_chunks(pieces: list[Piece], comma_id: int | None, chunk_length: int = CHUNK_LENGTH,
                backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """Pack weighted token runs into chunks of at most `chunk_length` content tokens (always ≥ 1 chunk)."""
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1  # index in `ids` of the chunk's last comma

    def close() -> None:
        nonlocal ids, weights, last_comma
        chunks.append((ids, weights))
        ids, weights, last_comma = [], [], -1

    for piece in pieces:
        if piece is None:
            close()  # BREAK: even an empty chunk is kept (a leading BREAK gives an empty first chunk, as A1111)
            continue
        tokens, weight = piece
        for token in tokens:
            if len(ids) == chunk_length:  # full, and one more token has to go somewhere
                if token != comma_id and last_comma >= 0 and chunk_length - last_comma <= backtrack:
                    # Don't cut a phrase in two: the words after the last comma open the next chunk.
                    keep = last_comma + 1
                    moved = ids[keep:], weights[keep:]
                    ids, weights = ids[:keep], weights[:keep]
                    close()
                    ids, weights = list(moved[0]), list(moved[1])
                else:
                    close()
            if token == comma_id:
                last_comma = len(ids)
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    return chunks


def _frame(chunk: Chunk, tokenizer) -> tuple[list[int], list[float], int]:
    """`[BOS] tokens [EOS] [PAD...]`, 77 ids, as HF's max_length padding (and A1111's SD2 path) lay it out."""
    ids, weights = chunk
    pad = CHUNK_LENGTH - len(ids)
    framed = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
    return framed, [1.0, *weights, 1.0] + [1.0] * pad, len(ids) + 2


def count_tokens(pipe_or_tokenizer, prompt: str, *, weighting: bool = True) -> int:
    """Token positions a prompt uses, for an "n/75" counter: a chunk closed early (BREAK, comma) counts as 75."""
    tokenizer = getattr(pipe_or_tokenizer, "tokenizer", None) or getattr(pipe_or_tokenizer, "tokenizer_2", None)
    tokenizer = tokenizer or pipe_or_tokenizer
    chunks = pack_chunks(_tokenize(tokenizer, [prompt], weighting)[0], _comma_id(tokenizer))
    return CHUNK_LENGTH * (len(chunks) - 1) + len(chunks[-1][0])


# ------------------------------------------------------------------------------------ chunks → tensors


def _execution_device(module: torch.nn.Module) -> torch.device:
    # With CPU offload the weights sit on the CPU while the forward runs on the accelerator.
    try:
        from diffusers.utils.torch_utils import get_module_execution_device

        return get_module_execution_device(module)
    except ImportError:
        return module.device


def _final_layer_norm(text_encoder) -> torch.nn.Module:
    # transformers ≥ 5.6 flattened CLIPTextModel (no `.text_model`); CLIPTextModelWithProjection still nests it.
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


def _emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111 "Original": weight each token vector, then restore each chunk's mean (z: (N, 77, C), weights: (N, 77))."""
    z32 = z.float()
    before = z32.mean(dim=(1, 2), keepdim=True)
    weighted = z32 * weights[..., None]
    after = weighted.mean(dim=(1, 2), keepdim=True)
    scale = torch.where(after == 0, torch.ones_like(after), before / after)
    return (weighted * scale).to(z.dtype)


@torch.no_grad()
def _encode_chunks(text_encoder, framed: list[tuple[list[int], list[float], int]], layer: int, final_norm: bool):
    """Encode chunks in one batch → (hidden (N, 77, C) with emphasis applied, pooled (N, P) or None).

    `layer` counts from the end of hidden_states (1 = last layer, before the final norm); `final_norm` says whether
    the final layer norm follows. layer 1 with final_norm is the model's own last_hidden_state.
    """
    device = _execution_device(text_encoder)
    input_ids = torch.tensor([f[0] for f in framed], dtype=torch.long, device=device)
    weights = torch.tensor([f[1] for f in framed], dtype=torch.float32, device=device)
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):  # as diffusers: only models trained with it
        attention_mask = (torch.arange(input_ids.shape[1], device=device)[None, :]
                          < torch.tensor([f[2] for f in framed], device=device)[:, None]).long()

    want_hidden = not (layer == 1 and final_norm)
    out = text_encoder(input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden)
    if want_hidden:
        hidden_states = out.hidden_states
        z = hidden_states[-min(layer, len(hidden_states))]  # clip skip beyond the depth: the embeddings
        if final_norm:
            z = _final_layer_norm(text_encoder)(z)
    else:
        z = out.last_hidden_state
    # The pooled vector (SDXL) is never weighted nor clip-skipped, as in A1111 and diffusers.
    pooled = getattr(out, "text_embeds", None)
    return _emphasis(z, weights), pooled


def _encode_padded(tokenizer, text_encoder, per_text: list[list[Chunk]], k: int, layer: int, final_norm: bool):
    """Encode every text's chunks in one batch; pad each text to k chunks with the empty chunk's encoding.

    Returns one (77·k, C) tensor per text and the pooled vectors of each text's first chunk ((T, P) or None).
    """
    framed = [_frame(c, tokenizer) for chunks in per_text for c in chunks]
    if any(len(chunks) < k for chunks in per_text):
        framed.append(_frame(([], []), tokenizer))  # the empty chunk, last in the batch
    z, pooled = _encode_chunks(text_encoder, framed, layer, final_norm)
    firsts = [0]
    for chunks in per_text[:-1]:
        firsts.append(firsts[-1] + len(chunks))
    padded = [torch.cat([z[f : f + len(chunks)], z[-1:].expand(k - len(chunks), -1, -1)]).flatten(0, 1)
              for f, chunks in zip(firsts, per_text)]
    return padded, None if pooled is None else pooled[firsts]


def encode_prompts(pipe, prompts: list[str], negative_prompts: list[str], *, clip_skip: int = 1,
                   weighting: bool = True) -> dict[str, torch.Tensor]:
    """Encode one prompt and one negative prompt per image into the kwargs of the pipeline call.

    Returns `prompt_embeds`, `negative_prompt_embeds` (each (B, 77·k, C); every prompt and negative is padded with
    empty-chunk encodings to the batch's largest chunk count k) and, for SDXL, `pooled_prompt_embeds`,
    `negative_pooled_prompt_embeds` (B, P), the pooled vector of each prompt's first chunk.

    clip_skip is A1111's "stop at last layers": 1 = the last layer. SD1/SD2 take hidden_states[-n] and the final
    layer norm; SDXL takes hidden_states[-(n+1)] without it (n=1: the penultimate layer, diffusers' default).
    weighting=False reads brackets as plain text (A1111's "None" emphasis).
    """
    if not prompts:
        raise ValueError("no prompts to encode")
    if len(prompts) != len(negative_prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    clip_skip = max(1, int(clip_skip or 1))
    is_xl = getattr(pipe, "text_encoder_2", None) is not None
    if is_xl:
        # An SDXL refiner has no first encoder; its features are text_encoder_2's alone.
        pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
                 if e is not None]
        layer, final_norm = clip_skip + 1, False
        out_dtype = pipe.text_encoder_2.dtype
    else:
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        layer, final_norm = clip_skip, True
        out_dtype = pipe.text_encoder.dtype

    # SDXL checkpoints trained with zeroed empty negatives ask for them (diffusers' force_zeros_for_empty_prompt;
    # A1111 zeroes them too).
    zero_empty = is_xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    zeroed = {i for i, n in enumerate(negative_prompts) if zero_empty and not strip_extra_networks(n)[0].strip()}
    # A batch usually repeats one prompt: encode each distinct text once.
    unique = list(dict.fromkeys([*prompts, *(n for i, n in enumerate(negative_prompts) if i not in zeroed)]))

    chunked = [[pack_chunks(pieces, _comma_id(tok)) for pieces in _tokenize(tok, unique, weighting)]
               for tok, _ in pairs]
    k = max(len(chunks) for per_encoder in chunked for chunks in per_encoder)
    outs = [_encode_padded(tok, encoder, per_text, k, layer, final_norm)
            for (tok, encoder), per_text in zip(pairs, chunked)]
    # SDXL: the two encoders' features side by side; the pooled vector is text_encoder_2's (the last pair).
    hidden = {t: torch.cat([o[0][i] for o in outs], dim=-1).to(out_dtype) for i, t in enumerate(unique)}
    pooled = dict(zip(unique, outs[-1][1].to(out_dtype))) if is_xl else {}

    def batch(table: dict, texts: list[str], zero_at: set[int]) -> torch.Tensor:
        zero = torch.zeros_like(next(iter(table.values())))
        return torch.stack([zero if i in zero_at else table[t] for i, t in enumerate(texts)])

    result = {"prompt_embeds": batch(hidden, prompts, set()),
              "negative_prompt_embeds": batch(hidden, negative_prompts, zeroed)}
    if is_xl:
        result["pooled_prompt_embeds"] = batch(pooled, prompts, set())
        result["negative_pooled_prompt_embeds"] = batch(pooled, negative_prompts, zeroed)
    return result

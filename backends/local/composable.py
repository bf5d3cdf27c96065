"""Prompt schedules and AND (composable diffusion) applied inside the pipeline call, by replacing the UNet's forward
for the call (as features/panorama.py does), so that every scheduler and both families (SD1/SD2 and SDXL with its
pooled vectors) work without a custom denoising loop (docs/reference/a1111_features.md §1).

At each guidance call the wrapper counts calls (A1111's counter: 0 first, restarted each pass), picks each job's
active negative and AND parts, and

* without AND: runs the UNet once on `[negatives, positives]`, as the pipeline would with those embeddings;
* with AND: runs it once on `[negatives, part 1, part 2, ...]` and hands the pipeline, in place of the positive
  prediction, `u + Σ w_j (c_j − u)`, so the pipeline's `u + cfg (c − u)` becomes A1111's
  `u + Σ w_j cfg (c_j − u)`.

A job without a plan (a plain prompt sharing the call) keeps the rows the pipeline passed. A prompt with no schedule
and no AND never gets here: it takes the engine's ordinary path.

Calls that are not the guidance call (SAG's extra call on the negatives alone has half the rows) pass through
unchanged and are not counted.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import torch

from ..samplers import resolve_sampler
from .features.panorama import patched_forward
from .prompt_parser import strip_extra_networks
from .prompt_schedule import prompt_schedule, sampler_counting, split_and, text_at
from .text_encoding import encode_prompts

Schedule = list[tuple[int, str]]
CLIP_POSITIONS = 77  # one encoded chunk: BOS, 75 tokens, EOS


@dataclass
class PromptPlan:
    """One job's conditioning per call in one pass: its negative schedule, its AND parts, their encodings."""

    negative: Schedule
    positive: list[tuple[float, Schedule]]  # (weight, schedule) per AND part
    scale: float = 1.0  # A1111 counter per UNet call here (prompt_schedule.counter_scale)
    cond: dict = field(default_factory=dict)  # text → (hidden (T, C), pooled (P,) or None)
    uncond: dict = field(default_factory=dict)

    def texts(self) -> tuple[list[str], list[str]]:
        return ([t for _, s in self.positive for _, t in s], [t for _, t in self.negative])

    def at(self, call: int) -> tuple[tuple, list[tuple[float, tuple]]]:
        counter = int(call * self.scale)
        return (self.uncond[text_at(self.negative, counter)],
                [(w, self.cond[text_at(s, counter)]) for w, s in self.positive])


def plan_for(prompt: str, negative: str, total: int, scale: float, hires_base: int | None = None) -> PromptPlan:
    """The plan of a prompt pair over `total` A1111 calls."""
    positive = [(w, prompt_schedule(text, total, hires_base)) for text, w in split_and(prompt)]
    return PromptPlan(prompt_schedule(negative, total, hires_base), positive, scale)


def is_constant(plan: PromptPlan) -> bool:
    """One text throughout and no AND: the pipeline's ordinary call with `final_texts` does it."""
    positive = plan.positive
    return len(positive) == 1 and positive[0][0] == 1.0 and len(positive[0][1]) == 1 and len(plan.negative) == 1


def final_texts(plan: PromptPlan) -> tuple[str, str]:
    """The texts the pipeline is handed (the first AND part's and the negative's last): their shapes group jobs."""
    return plan.positive[0][1][-1][1], plan.negative[-1][1]


def run_plans(job, prompt: str, negative: str, choice) -> tuple[PromptPlan | None, PromptPlan | None, tuple]:
    """A job's plans for its first pass and its hires pass (None: nothing changes during that pass), and the texts
    the first pass's pipeline is handed (a plain prompt's own texts). The hires pass follows the reference's rule
    (`when` counted on from the first pass); one on another checkpoint gets no plan: its UNet is not wrapped."""
    total, scale = sampler_counting(choice, job.steps)
    first = plan_for(prompt, negative, total, scale)
    texts = final_texts(first)
    first = None if is_constant(first) else first
    hires = job.hires
    if hires is None or hires.model:
        return first, None, texts
    if hires.sampler or hires.schedule:
        choice = resolve_sampler(hires.sampler or job.sampler, hires.schedule or job.schedule)
    hires_total, hires_scale = sampler_counting(choice, hires.steps or job.steps)
    hires_prompt = strip_extra_networks(hires.prompt)[0] if hires.prompt else prompt
    hires_negative = strip_extra_networks(hires.negative_prompt)[0] if hires.negative_prompt else negative
    second = plan_for(hires_prompt, hires_negative, hires_total, hires_scale, hires_base=total)
    return first, None if is_constant(second) else second, texts


def encode_plans(pipe, plans: list[PromptPlan], texts: tuple[str, str], n: int, **encoding) -> dict:
    """Encode every text of `plans` once (one encoder batch, so all share one token length) and fill the plans'
    tables; return the pipeline's embeddings for `n` images of `texts` (prompt, negative)."""
    first_pos, first_neg = texts
    positives = list(dict.fromkeys([first_pos, *(t for p in plans for t in p.texts()[0])]))
    negatives = list(dict.fromkeys([first_neg, *(t for p in plans for t in p.texts()[1])]))
    rows = max(len(positives), len(negatives))  # encode_prompts takes pairs: pad both lists with their first text
    out = encode_prompts(pipe, positives + positives[:1] * (rows - len(positives)),
                         negatives + negatives[:1] * (rows - len(negatives)), **encoding)
    pooled, neg_pooled = out.get("pooled_prompt_embeds"), out.get("negative_pooled_prompt_embeds")
    cond = {t: (out["prompt_embeds"][i], None if pooled is None else pooled[i]) for i, t in enumerate(positives)}
    uncond = {t: (out["negative_prompt_embeds"][i], None if neg_pooled is None else neg_pooled[i])
              for i, t in enumerate(negatives)}
    for plan in plans:
        plan.cond, plan.uncond = cond, uncond
    return {k: v[[0] * n] for k, v in out.items()}


class ConditioningSwap:
    """The UNet forward for one pipeline call of several jobs (`members`: each job's plan, or None, and its number
    of images, in the call's batch order)."""

    def __init__(self, unet, members: list[tuple[PromptPlan | None, int]], cfg: bool):
        self.original = unet.forward
        self.members, self.cfg, self.calls = members, cfg, 0
        self.images = sum(n for _, n in members)
        self._inner = threading.local()

    def start_pass(self, plans: list[PromptPlan | None]) -> None:
        """A new sampling run (the hires pass): the counter restarts, with each job's plan for it."""
        self.members = [(plan, n) for plan, (_, n) in zip(plans, self.members)]
        self.calls = 0

    def forward(self, sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        b = self.images
        if (getattr(self._inner, "active", False) or all(p is None for p, _ in self.members)
                or sample.shape[0] != (2 * b if self.cfg else b)):
            return self.original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        call, self.calls = self.calls, self.calls + 1
        added = dict(kwargs.get("added_cond_kwargs") or {})
        pooled_in = added.get("text_embeds")
        uncond, conds = self._rows(call, encoder_hidden_states, pooled_in)
        parts = len(conds)
        if parts == 1 and all(w == 1.0 for w in conds[0][2]):  # a schedule alone: the pipeline's own layout
            hidden = [uncond[0], conds[0][0]] if self.cfg else [conds[0][0]]
            pooled = [uncond[1], conds[0][1]] if self.cfg else [conds[0][1]]
            return self._run(sample, timestep, hidden, pooled, added, args, kwargs)
        # AND: one batch [uncond, part 1, ..., part J]; the positive prediction becomes u + Σ w_j (c_j − u)
        latents_u, latents_c = (sample[:b], sample[b:]) if self.cfg else (sample, sample)
        big = torch.cat([latents_u] + [latents_c] * parts)
        t = timestep
        if torch.is_tensor(t) and t.ndim > 0 and t.shape[0] == sample.shape[0]:
            t = torch.cat([t[:b]] + [t[-b:]] * parts)
        if "time_ids" in added and added["time_ids"] is not None:
            ids = added["time_ids"]
            added["time_ids"] = torch.cat([ids[:b]] + [ids[-b:]] * parts)
        out = self._run(big, t, [uncond[0], *(c[0] for c in conds)], [uncond[1], *(c[1] for c in conds)],
                        added, args, kwargs)
        pred = out[0] if isinstance(out, tuple) else out.sample
        chunks = pred.float().split(b)
        u = chunks[0]
        combined = u.clone()
        for (_, _, weights), c in zip(conds, chunks[1:]):
            combined += weights.to(u.device).view(-1, *[1] * (u.ndim - 1)) * (c - u)
        result = (torch.cat([u, combined]) if self.cfg else combined).to(pred.dtype)
        if isinstance(out, tuple):
            return (result,)
        return type(out)(sample=result)

    def _rows(self, call: int, hidden_in, pooled_in):
        """(uncond hidden, uncond pooled), [(hidden, pooled, weights (B,)) per AND part] for every image."""
        b = self.images
        parts = max(len(p.positive) for p, _ in self.members if p is not None)
        u_h, u_p = [], []
        c_h, c_p, c_w = ([[] for _ in range(parts)] for _ in range(3))
        at = 0
        for plan, n in self.members:
            if plan is None:  # keep the rows the pipeline passed (no CFG: only positives, and weight 1 keeps them)
                cond_at = b + at if self.cfg else at
                uh = hidden_in[at : at + n]
                up = None if pooled_in is None else pooled_in[at : at + n]
                mine = [(hidden_in[cond_at : cond_at + n],
                         None if pooled_in is None else pooled_in[cond_at : cond_at + n], 1.0)]
            else:
                (h, p), subs = plan.at(call)
                uh, up = h.expand(n, *h.shape), None if p is None else p.expand(n, *p.shape)
                mine = [(sh.expand(n, *sh.shape), None if sp is None else sp.expand(n, *sp.shape), w)
                        for w, (sh, sp) in subs]
            u_h.append(uh)
            u_p.append(up)
            for j in range(parts):  # a job with fewer parts repeats its first with weight 0
                h, p, w = mine[j] if j < len(mine) else (*mine[0][:2], 0.0)
                c_h[j].append(h)
                c_p[j].append(p)
                c_w[j].append(torch.full((n,), float(w)))
            at += n

        def cat(tensors):
            if any(t is None for t in tensors):
                return None
            if tensors[0].ndim == 3:  # token lengths differ only with another pass's encodings: repeat last chunk
                longest = max(t.shape[1] for t in tensors)
                tensors = [t if t.shape[1] == longest else
                           torch.cat([t, t[:, -CLIP_POSITIONS:].repeat(1, (longest - t.shape[1]) // CLIP_POSITIONS, 1)], 1)
                           for t in tensors]
            return torch.cat(tensors)

        return (cat(u_h), cat(u_p)), [(cat(c_h[j]), cat(c_p[j]), torch.cat(c_w[j])) for j in range(parts)]

    def _run(self, sample, timestep, hidden, pooled, added, args, kwargs):
        if added:  # SDXL: the pooled vectors follow the texts
            if added.get("text_embeds") is not None:
                added["text_embeds"] = torch.cat(pooled)
            kwargs = {**kwargs, "added_cond_kwargs": added}
        self._inner.active = True  # a wrapper below (panorama's windows) calls the UNet again: pass it through
        try:
            return self.original(sample, timestep, torch.cat(hidden), *args, **kwargs)
        finally:
            self._inner.active = False


@contextlib.contextmanager
def conditioning_applied(pipe, members: list[tuple[PromptPlan | None, int]], cfg: bool):
    """For the block, `pipe.unet` (shared with the image-to-image variants) takes each job's plan. Yields the swap
    (`start_pass` for the hires pass)."""
    unet = pipe.unet
    swap = ConditioningSwap(unet, members, cfg)
    with patched_forward(unet, swap.forward):
        yield swap

"""The decoding engine: prefill a batch of prompts, then step, for any seqlab model.

Prompts of different lengths are prefilled row by row and their states
joined with ``State.cat`` (a KV cache keeps one length per row), so no
padding token ever enters a recurrent state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqlab.models.lm import LM, LMState


class PromptError(ValueError):
    """A prompt the model cannot take (empty, too long, or out of vocabulary)."""


@dataclass
class GenerateOutput:
    """What every strategy returns.

    Attributes:
        tokens: per row, the generated token ids (prompt excluded).
        stats: target_calls (model forward/step calls), tokens_per_call,
            wall_s, prefill_s, new_tokens and strategy-specific entries.
    """

    tokens: list[list[int]]
    stats: dict = field(default_factory=dict)


def as_rows(prompt: Tensor | Sequence[Sequence[int]] | Sequence[int]) -> list[list[int]]:
    """A batch of prompts as lists of ids: accepts a (B, T) tensor, a (T,) tensor, or lists."""
    if isinstance(prompt, Tensor):
        if prompt.dim() == 1:
            prompt = prompt[None]
        return [list(map(int, r)) for r in prompt.tolist()]
    prompt = list(prompt)
    if prompt and isinstance(prompt[0], int):
        return [list(prompt)]
    return [list(map(int, r)) for r in prompt]


def check_prompts(model: LM, rows: list[list[int]], max_new_tokens: int) -> None:
    if not rows:
        raise PromptError("no prompts given")
    for i, r in enumerate(rows):
        if not r:
            raise PromptError(f"prompt {i} is empty; give at least one token")
        bad = [t for t in r if not 0 <= t < model.cfg.vocab_size]
        if bad:
            raise PromptError(f"prompt {i} holds token id {bad[0]}, outside the vocabulary "
                              f"[0, {model.cfg.vocab_size})")
    limit = model.cfg.max_length
    if limit is not None:
        longest = max(len(r) for r in rows)
        if max_new_tokens >= limit:
            raise PromptError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the "
                              f"model's maximum length of {limit} tokens; lower it below {limit}")
        if longest + max_new_tokens > limit:
            raise PromptError(
                f"the prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                f"model's maximum length of {limit} tokens; shorten the prompt to at most "
                f"{limit - max_new_tokens} tokens or lower max_new_tokens to {max(0, limit - longest)}")


def last_logits(model, tokens: Tensor) -> tuple[Tensor, LMState]:
    """The parallel face on ``tokens`` (B, T), with the vocabulary head at the last position only.

    A prompt's other positions need no logits: for SmolLM2 (vocabulary 49,152) the
    head over a 160-token prompt cost as much as the 30 layers below it.
    """
    if hasattr(model, "features") and hasattr(model, "head"):
        hidden, state = model.features(tokens)
        return model.head(hidden[:, -1]), state
    logits, state = model(tokens)
    return logits[:, -1], state


def prefill(model: LM, rows: list[list[int]], device) -> tuple[Tensor, LMState, int]:
    """Run the prompts; returns last-position logits (B, V), the joined state, forward calls."""
    lengths = {len(r) for r in rows}
    if len(lengths) == 1:
        logits, state = last_logits(model, torch.tensor(rows, device=device))
        return logits, state, 1
    outs, states = [], []
    for r in rows:
        logits, s = last_logits(model, torch.tensor([r], device=device))
        outs.append(logits)
        states.append(s)
    return torch.cat(outs), LMState.cat(states), len(rows)


class StopChecker:
    """Per-row end conditions: an end-of-sequence id or any stop sequence."""

    def __init__(self, batch: int, eos_id: int | None, stop: Sequence[Sequence[int]]):
        self.eos_id = eos_id
        self.stop = [list(s) for s in stop if len(s)]
        self.done = [False] * batch

    def update(self, row: int, generated: list[int]) -> bool:
        if self.done[row]:
            return True
        last = generated[-1]
        if self.eos_id is not None and last == self.eos_id:
            self.done[row] = True
        for s in self.stop:
            if generated[-len(s):] == s:
                self.done[row] = True
        return self.done[row]


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0

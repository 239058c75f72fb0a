"""The decoding engine's shared parts: requests, prefill, per-row bookkeeping, statistics.

Every strategy receives a ``Request`` and returns a ``GenerateOutput``. Prompts of
different lengths are prefilled row by row and their states joined with the state's
own ``cat`` (a KV cache keeps one length per row), so no padding token ever enters a
recurrent state. The engine sees models only through ``seqlab.decoding.protocol``.
"""

from __future__ import annotations

import dataclasses
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqlab.decoding.sampling import SamplingConfig
from seqlab.state import State


TREES_KEPT = 32   # draft trees a tree strategy records in DecodeStats.trees


class PromptError(ValueError):
    """A prompt the model cannot take (empty, too long, or out of vocabulary)."""


@dataclass
class DecodeStats:
    """What a generate call did. Counts are summed over the batch's rows.

    Attributes:
        strategy: the strategy's name ("greedy" for ``sample`` at temperature 0).
        options: the strategy's resolved options.
        target_calls: calls of the model (prefill, steps, verification, recomputation).
        verify_calls: draft-and-verify rounds (one target call each).
        recompute_calls: target calls that rebuilt a recurrent state after a rejection.
        draft_calls: calls of a draft model.
        drafted: draft tokens proposed (tree nodes for trees).
        draft_hits: row-rounds that proposed at least one token.
        accepted: per round, the draft tokens each row accepted.
        new_tokens: tokens generated.
        prefill_s, wall_s: seconds in the prefill, and in all.
        explored: tokens the adaptive n-gram drafter proposed by exploration (ngram and ngram-tree only).
        nbest, scores: beam searches' hypotheses per row and the best one's score.
        trees: tree strategies: the first row's draft tree in each of the first
            ``TREES_KEPT`` rounds, ``{"root": token, "nodes": [[depth, index, parent,
            token], ...], "accepted": [[depth, index], ...]}`` (parent indexes the level
            above; depth 0 hangs from the root).
    """

    strategy: str
    options: dict = field(default_factory=dict)
    target_calls: int = 0
    verify_calls: int = 0
    recompute_calls: int = 0
    draft_calls: int = 0
    drafted: int = 0
    draft_hits: int = 0
    accepted: list[list[int]] = field(default_factory=list)
    new_tokens: int = 0
    prefill_s: float = 0.0
    wall_s: float = 0.0
    explored: int | None = None
    nbest: list | None = None
    scores: list[float] | None = None
    trees: list[dict] | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.wall_s, 1e-9)

    @property
    def tokens_per_call(self) -> float:
        """New tokens per verification round, or per target call without drafting."""
        return self.new_tokens / max(self.verify_calls or self.target_calls, 1)

    @property
    def accepted_tokens(self) -> int:
        return sum(n for r in self.accepted for n in r)

    @property
    def mean_accepted(self) -> float:
        """Accepted draft tokens per row and round."""
        n = sum(len(r) for r in self.accepted)
        return self.accepted_tokens / max(n, 1)

    def summary(self) -> dict:
        """Every figure as plain data (fields and the derived rates), ``accepted`` and
        ``trees`` left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("accepted", "trees") and getattr(self, f.name) is not None}
        for name in ("tokens_per_s", "tokens_per_call", "accepted_tokens", "mean_accepted"):
            out[name] = getattr(self, name)
        return out


@dataclass
class GenerateOutput:
    """What every strategy returns: per row the generated ids (prompt excluded), and stats."""

    tokens: list[list[int]]
    stats: DecodeStats


class StopChecker:
    """Per-row end conditions: an end-of-sequence id or any stop sequence."""

    def __init__(self, batch: int, eos_id: int | None, stop: Sequence[Sequence[int]]):
        self.eos_id = eos_id
        self.stop = [list(s) for s in stop if len(s)]
        self.done = [False] * batch

    def ends(self, generated: list[int]) -> bool:
        """Whether a row that generated ``generated`` has ended."""
        if self.eos_id is not None and generated and generated[-1] == self.eos_id:
            return True
        return any(generated[-len(s):] == s for s in self.stop)

    def update(self, row: int, generated: list[int]) -> bool:
        if not self.done[row] and self.ends(generated):
            self.done[row] = True
        return self.done[row]


@dataclass
class Request:
    """One generate call as every strategy sees it.

    Attributes:
        rows: the prompts, lists of ids of any lengths.
        max_new_tokens: tokens to add per row at most.
        sampling: how tokens are chosen (``sampling.greedy``: argmax).
        stopper: per-row end conditions.
        on_token: ``on_token(row, token)`` as tokens are produced (streaming), or None; a
            true return ends that row after this token.
        generator: the sampler's own random generator, or None.
        draft: a draft model (strategies that take one), or None.
        cached: per row None or ``(n, state)``: the row's first n tokens are already in this
            one-row state of the model (see ``prefill``); None: every row runs in full.
    """

    rows: list[list[int]]
    max_new_tokens: int
    sampling: SamplingConfig
    stopper: StopChecker
    on_token: Callable[[int, int], bool | None] | None = None
    generator: torch.Generator | None = None
    draft: object | None = None
    cached: list | None = None


class Rows:
    """The outputs of one request: emitted tokens per row, which rows are still active.

    ``active`` lists the original row indices still generating, in the order of the
    strategy's states (row ``i`` of a state is ``active[i]``).
    """

    def __init__(self, req: Request):
        self.req = req
        self.out: list[list[int]] = [[] for _ in req.rows]
        self.active = list(range(len(req.rows)))

    def emit(self, b: int, t: int) -> bool:
        """Append token ``t`` to row ``b``, stream it; whether the row has now finished."""
        self.out[b].append(t)
        if self.req.on_token is not None and self.req.on_token(b, t):
            self.req.stopper.done[b] = True   # the caller ended the row (a server's client left)
        self.req.stopper.update(b, self.out[b])
        return self.req.stopper.done[b] or len(self.out[b]) >= self.req.max_new_tokens

    def emit_round(self, tokens: list[list[int]]) -> list[int]:
        """Emit each active row's tokens of this round, a row stopping at its finishing token.

        Returns the indices (into ``active`` before the call) of the rows that go on, and
        drops the others from ``active``.
        """
        keep = [i for i, (b, toks) in enumerate(zip(self.active, tokens))
                if not any(self.emit(b, t) for t in toks)]  # any() stops at the finishing token
        self.active = [self.active[i] for i in keep]
        return keep

    def room(self) -> list[int]:
        """Per active row, how many more tokens it may emit."""
        return [self.req.max_new_tokens - len(self.out[b]) for b in self.active]

    def finish(self, stats: DecodeStats, elapsed: Callable[[], float]) -> GenerateOutput:
        stats.new_tokens = sum(len(o) for o in self.out)
        stats.wall_s = elapsed()
        return GenerateOutput(self.out, stats)


def as_rows(prompt: Tensor | Sequence[Sequence[int]] | Sequence[int]) -> list[list[int]]:
    """A batch of prompts as lists of ids: a (B, T) or (T,) integer tensor or array, a list of
    ids, or a list of id lists. PromptError for anything else (text, bytes, floats, bools)."""
    if prompt is None:
        raise PromptError("prompt is None; give token ids, e.g. tokenizer.encode(text)")
    if isinstance(prompt, str):
        raise PromptError("prompt is a str; encode it first: tokenizer.encode(text) gives its ids")
    if isinstance(prompt, (bytes, bytearray)):
        raise PromptError("prompt is bytes; token ids are ints: give tokenizer.encode(text) "
                          "(for a byte-level model, list(data) is the ids)")
    if hasattr(prompt, "__array__") and not isinstance(prompt, Tensor):
        prompt = torch.as_tensor(prompt)   # a numpy array
    if isinstance(prompt, Tensor):
        if prompt.dtype == torch.bool or prompt.is_floating_point() or prompt.is_complex():
            raise PromptError(f"the prompt tensor has dtype {prompt.dtype}; token ids are an "
                              "integer tensor (torch.long)")
        if prompt.dim() not in (1, 2):
            raise PromptError(f"the prompt is a {prompt.dim()}-d tensor; give (T,) ids or a (B, T) "
                              "batch")
        return [list(r) for r in (prompt[None] if prompt.dim() == 1 else prompt).tolist()]
    if not isinstance(prompt, Sequence):
        raise PromptError(f"prompt is a {type(prompt).__name__}; give token ids: a list of ints, "
                          "a list of such lists, or an integer tensor")
    first = prompt[0] if prompt else None
    nested = isinstance(first, Sequence) or (isinstance(first, Tensor) and first.dim() > 0)
    rows = list(prompt) if (not prompt or nested) else [prompt]   # a batch, or one row of ids
    for i, row in enumerate(rows):
        if isinstance(row, Tensor) and row.dim() == 1:
            row = as_rows(row)[0]
        if isinstance(row, (str, bytes, bytearray)) or not isinstance(row, Sequence):
            raise PromptError(f"prompt {i} is a {type(row).__name__}; each prompt of a batch is a "
                              "list of token ids (ints)")
        for j, t in enumerate(row):
            if not _is_id(t):
                raise PromptError(f"token {j} of prompt {i} is a {type(t).__name__} ({t!r}); token "
                                  "ids are ints")
        rows[i] = [int(t) for t in row]
    return rows


def _is_id(t) -> bool:
    """An int token id (numpy and 0-d integer tensors too), not a bool."""
    if isinstance(t, bool) or "bool" in str(getattr(t, "dtype", "")):   # torch.bool, numpy bool
        return False
    if isinstance(t, Tensor):
        return t.dim() == 0 and not (t.is_floating_point() or t.is_complex())
    try:
        operator.index(t)
        return True
    except TypeError:
        return False


def check_prompts(model, rows: list[list[int]], max_new_tokens: int) -> None:
    """PromptError unless every row fits the model's vocabulary and maximum length."""
    if not rows:
        raise PromptError("no prompts given")
    for i, r in enumerate(rows):
        if not r:
            raise PromptError(f"prompt {i} is empty; give at least one token")
        bad = [t for t in r if not 0 <= t < model.vocab_size]
        if bad:
            raise PromptError(f"prompt {i} holds token id {bad[0]}, outside the vocabulary "
                              f"[0, {model.vocab_size})")
    limit = model.max_length
    if limit is not None:
        longest = max(len(r) for r in rows)
        if max_new_tokens >= limit:
            raise PromptError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the "
                              f"model's maximum length of {limit} tokens; lower it below {limit}")
        if longest + max_new_tokens > limit:
            fix = f"shorten the prompt to at most {limit - max_new_tokens} tokens"
            if longest < limit:   # else no max_new_tokens would make it fit
                fix += f" or lower max_new_tokens to {limit - longest}"
            raise PromptError(
                f"the prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                f"model's maximum length of {limit} tokens; {fix}")


def prefill(model, rows: list[list[int]], cached: Sequence | None = None
            ) -> tuple[Tensor, State, int]:
    """Run the prompts; returns last-position logits (B, V), the joined state, model calls.

    ``cached[b]``, when given and not None, is ``(n, state)``: the first ``n`` tokens of
    row b already ran into ``state`` (one row), so only the rest of the row runs.
    """
    device = model.device
    cached = cached if cached is not None else [None] * len(rows)
    if len({len(r) for r in rows}) == 1 and all(c is None for c in cached):
        logits, state = model(torch.tensor(rows, device=device), last_only=True)
        return logits, state, 1
    outs, states = [], []
    for r, c in zip(rows, cached):
        n, start = c if c is not None else (0, None)
        logits, s = model(torch.tensor([r[n:]], device=device), start, last_only=True)
        outs.append(logits)
        states.append(s)
    return torch.cat(outs), type(states[0]).cat(states), len(rows)


def prefill_features(model, rows: list[list[int]], cached: Sequence | None = None
                     ) -> tuple[Tensor, list[Tensor], State, int]:
    """``prefill`` through the target's ``features`` (the protocol's features capability), for
    drafters that read its hidden states: last-position logits (B, V), per row the hidden
    states of the positions that ran (T_b, H) (a cached row's cached part did not), the
    joined state and the model calls. The logits are the head on the same hidden states, so
    the first token is the one ``prefill`` gives.
    """
    device = model.device
    cached = cached if cached is not None else [None] * len(rows)
    if len({len(r) for r in rows}) == 1 and all(c is None for c in cached):
        hidden, state = model.features(torch.tensor(rows, device=device))
        return model.logits(hidden[:, -1]), list(hidden), state, 1
    outs, hiddens, states = [], [], []
    for r, c in zip(rows, cached):
        n, start = c if c is not None else (0, None)
        hidden, s = model.features(torch.tensor([r[n:]], device=device), start)
        outs.append(model.logits(hidden[:, -1]))
        hiddens.append(hidden[0])
        states.append(s)
    return torch.cat(outs), hiddens, type(states[0]).cat(states), len(rows)


def combine(parts: list[tuple[list[int], State]], batch: int) -> State:
    """Join per-group states (each holding the rows ``idx`` in that order) into batch order."""
    if len(parts) == 1:
        return parts[0][1]
    order = [b for idx, _ in parts for b in idx]
    inverse = [0] * batch
    for pos, b in enumerate(order):
        inverse[b] = pos
    states = [s for _, s in parts]
    return type(states[0]).cat(states).select(inverse)


def groups(counts: list[int]) -> dict[int, list[int]]:
    """Rows grouped by their count: ``{count: [row, ...]}``."""
    g: dict[int, list[int]] = {}
    for b, n in enumerate(counts):
        g.setdefault(n, []).append(b)
    return g


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0

"""Decoding conditioned on an acceptable output: conditional beam search ("Making the Most of
your Model", Yoshida 2024) in the Bayes form of FUDGE (Yang & Klein 2021).

An acceptability head reads the target's hidden state after a prefix and scores every next
token ``v``: ``log P(A | prefix, v)``, the chance that the finished output is acceptable
(here: not degenerate, see :func:`degenerate`) if ``v`` comes next. ``Conditioned(model,
head)`` is a decodable model whose logits are

    log p(v | prefix) + weight * log P(A | prefix, v)

and every strategy normalises them: with ``weight`` 1 and a calibrated head that is
``p(v | prefix, A)`` (Bayes), so beam search on it is the conditional beam search, greedy and
sampling are conditioned likewise, and ``weight`` 0 is the model itself. The head costs one
small matrix product per position (it is tied to the token embeddings: ``score(v) = b +
a·h + (W h)·e_v``), so conditioning adds little to a step.

:func:`train_head` fits it from the model's own outputs labelled acceptable or not: at each
position of a continuation the head's score of the token that came next is pushed towards
the whole continuation's label (binary cross-entropy).

Example:
    >>> head = train_head(model, continuations, prompt_lengths, labels)
    >>> generate(Conditioned(model, head), prompts, "beam", 32, num_beams=4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.decoding.protocol import Capabilities


def degenerate(tokens: Sequence[int], n: int = 3, repeats: int = 3, min_length: int = 1) -> bool:
    """Whether a continuation is degenerate: shorter than ``min_length``, or some ``n``-gram
    occurs ``repeats`` times or more (a loop)."""
    tokens = list(tokens)
    if len(tokens) < min_length:
        return True
    counts: dict[tuple[int, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        g = tuple(tokens[i:i + n])
        counts[g] = counts.get(g, 0) + 1
        if counts[g] >= repeats:
            return True
    return False


class AcceptabilityHead(nn.Module):
    """``log P(A | h, v)`` for every token ``v`` from a hidden state ``h``, tied to the token
    embeddings ``E`` (kept frozen, not a parameter): ``logsigmoid(b + a·h + (W h)·E_v)``."""

    def __init__(self, embeddings: Tensor):
        super().__init__()
        dim = embeddings.shape[1]
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.any = nn.Linear(dim, 1)
        nn.init.zeros_(self.proj.weight)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (..., dim) -> log P(A | h, v) (..., vocab)."""
        h = hidden.to(self.proj.weight.dtype)
        return F.logsigmoid(self.any(h) + self.proj(h) @ self.embeddings.T)

    def logit(self, hidden: Tensor, tokens: Tensor) -> Tensor:
        """The logit of P(A | h_i, v_i) for one token per state: hidden (N, dim), tokens (N,)
        -> (N,), without the whole vocabulary (training)."""
        h = hidden.to(self.proj.weight.dtype)
        return self.any(h)[:, 0] + (self.proj(h) * self.embeddings[tokens]).sum(-1)


class Conditioned(nn.Module):
    """``model`` decoded conditioned on acceptability (see the module docstring).

    Raises:
        ValueError: a model without the ``features`` capability.
    """

    def __init__(self, model, head: AcceptabilityHead, weight: float = 1.0):
        super().__init__()
        if not model.capabilities.features:
            raise ValueError("conditioning needs the model's hidden states: a model with the "
                             "features capability (a seqlab LM)")
        self.model, self.head, self.weight = model, head, weight

    vocab_size = property(lambda self: self.model.vocab_size)
    max_length = property(lambda self: self.model.max_length)
    device = property(lambda self: self.model.device)
    capabilities = property(lambda self: Capabilities())

    def init_state(self, batch_size: int, *, device=None, dtype=None):
        return self.model.init_state(batch_size, device=device, dtype=dtype)

    def _scores(self, hidden: Tensor) -> Tensor:
        logits = self.model.logits(hidden)
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        return logp if self.weight == 0 else logp + self.weight * self.head(hidden)

    def forward(self, tokens: Tensor, state=None, *, last_only: bool = False):
        hidden, state = self.model.features(tokens, state)
        return self._scores(hidden[:, -1] if last_only else hidden), state

    def step(self, token: Tensor, state):
        hidden, state = self.model.features(token[:, None], state)
        return self._scores(hidden[:, 0]), state


def train_head(model, sequences: Sequence[Sequence[int]], starts: Sequence[int],
               labels: Sequence[bool], steps: int = 200, lr: float = 1e-3, batch_size: int = 16,
               seed: int = 0) -> AcceptabilityHead:
    """Fit an acceptability head on the model's continuations.

    Args:
        model: the target (``features`` capability; its ``embed`` weights tie the head).
        sequences: prompt + continuation ids, one per example.
        starts: where each continuation starts (its prompt's length).
        labels: whether each continuation is acceptable (True) or degenerate (False).
        steps, lr, batch_size, seed: Adam on binary cross-entropy.

    Raises:
        ValueError: lists of unequal lengths, a continuation of no tokens, or one label only.
    """
    if not (len(sequences) == len(starts) == len(labels)):
        raise ValueError(f"{len(sequences)} sequences, {len(starts)} starts and {len(labels)} "
                         "labels: give one of each per example")
    if len(set(map(bool, labels))) < 2:
        raise ValueError("the labels need both acceptable and degenerate examples")
    device = model.device
    feats, targets, ys = [], [], []
    with torch.no_grad():   # the target's features once; only the head trains
        for seq, start, label in zip(sequences, starts, labels):
            if len(seq) <= start or start < 1:
                raise ValueError(f"a continuation must start after a prompt of >= 1 token and "
                                 f"hold >= 1 token (start {start}, length {len(seq)})")
            hidden, _ = model.features(torch.tensor([list(seq)], device=device))
            feats.append(hidden[0, start - 1:len(seq) - 1].float())      # before each new token
            targets.append(torch.tensor(seq[start:], device=device))
            ys.append(torch.full((len(seq) - start,), float(label), device=device))
    feats, targets, ys = torch.cat(feats), torch.cat(targets), torch.cat(ys)
    embed = getattr(model, "embed", None)
    if not isinstance(embed, nn.Embedding):
        raise ValueError("the head ties to the model's token embeddings (model.embed, a seqlab "
                         f"LM's); {type(model).__name__} has none")
    head = AcceptabilityHead(embed.weight).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    # Each class weighs the same: degenerate outputs may be rare.
    w = torch.where(ys > 0.5, 0.5 / ys.mean().clamp(min=1e-6), 0.5 / (1 - ys.mean()).clamp(min=1e-6))
    for _ in range(steps):
        i = torch.randint(0, len(ys), (batch_size * 32,), generator=gen).to(device)
        loss = F.binary_cross_entropy_with_logits(head.logit(feats[i], targets[i]), ys[i],
                                                  weight=w[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()

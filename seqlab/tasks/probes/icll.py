"""In-context language learning (ICLL).

Source: Akyürek, Wang, Kim & Andreas 2024, "In-context language learning: architectures and
algorithms". Each sequence is a handful of strings from a regular language that is new to
the model (a random probabilistic automaton); to predict the next symbol the model must
infer the automaton from the strings it has read so far. Transformers do this well (with
"n-gram heads"); fixed-state recurrent models less so.

Each row draws its own automaton:

* ``n`` states (uniform in ``[min_states, max_states]``, 4-12 by default as in the paper;
  state 0 starts every string) and an alphabet of ``a`` symbols (uniform in
  ``[min_alphabet, max_alphabet]``, a random subset of the ``num_symbols`` symbols; the
  alphabet, out-degree and string-length ranges are our choices);
* every state emits between 1 and ``max_out_degree`` distinct symbols of the alphabet with
  Dirichlet(1) probabilities, and each (state, symbol) edge leads to a fixed random state
  (deterministic transitions);

and then emits strings separated by the delimiter, starting with one::

    | s s s s | s s s s s s | s s s | ...

String lengths are uniform in ``[min_string_len, max_string_len]``, drawn independently of
the automaton. Hence the model cannot know when a string ends, and we score *symbols*
only: the target at position t is scored when t lies after the first string (from the
second delimiter on) and token t + 1 is a symbol. The model is read conditionally on the
string going on: the delimiter's logit is dropped before the argmax and the softmax.

``batch.extra``:

* ``next_dist`` (B, L, V) float32: the automaton's next-symbol distribution after token t
  (zero on the delimiter), the exact distribution the scored target was drawn from;
* ``state`` (B, L) int64: the automaton state after token t.

Scores (additive): ``correct`` (the predicted symbol has non-zero probability), ``count``,
``tv_sum`` (total-variation distance between the model's distribution over symbols and
``next_dist``). Metrics: ``accuracy`` and ``tv``.

Sampling is batched over rows; the Markov chain is a loop over positions (L steps of a few
tensor ops each).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import require
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import IGNORE, Probe, ProbeBatch, ProbeConfig, randint_between


@dataclass(frozen=True)
class ICLLConfig(ProbeConfig):
    """ICLL parameters. Symbols are ids ``0 .. num_symbols - 1``; the delimiter is
    ``num_symbols``."""

    seq_len: int = 512
    num_symbols: int = 20
    min_states: int = 4
    max_states: int = 12
    min_alphabet: int = 4
    max_alphabet: int = 18
    max_out_degree: int = 4
    min_string_len: int = 4
    max_string_len: int = 16

    def validate(self) -> None:
        super().validate()
        require(self.num_symbols >= 2, self, "num_symbols", "an int >= 2")
        require(self.min_states >= 1, self, "min_states", "an int >= 1")
        require(self.max_states >= self.min_states, self, "max_states",
                f"an int >= min_states = {self.min_states}")
        require(self.min_alphabet >= 1, self, "min_alphabet", "an int >= 1")
        require(self.min_alphabet <= self.max_alphabet <= self.num_symbols, self, "max_alphabet",
                f"an int in [min_alphabet = {self.min_alphabet}, num_symbols = {self.num_symbols}]")
        require(1 <= self.max_out_degree <= self.max_alphabet, self, "max_out_degree",
                f"an int in [1, max_alphabet = {self.max_alphabet}]")
        require(self.min_string_len >= 1, self, "min_string_len", "an int >= 1")
        require(self.max_string_len >= self.min_string_len, self, "max_string_len",
                f"an int >= min_string_len = {self.min_string_len}")
        require(self.seq_len >= self.max_string_len + 2, self, "seq_len",
                f"an int >= max_string_len + 2 = {self.max_string_len + 2} (room for the first "
                f"string and at least one scored symbol)")


@dataclass
class Automata:
    """A batch of probabilistic automata, padded to ``max_states`` states."""

    probs: Tensor  # (B, S, V) emission probabilities per state; zero on the delimiter
    next_state: Tensor  # (B, S, V) the state an emitted symbol leads to


@register("icll")
class ICLL(Probe):
    """In-context language learning; see the module docstring."""

    kind = "lm"
    Config = ICLLConfig

    @property
    def vocab_size(self) -> int:
        return self.cfg.num_symbols + 1

    @property
    def delimiter(self) -> int:
        return self.cfg.num_symbols

    def sample_automata(self, g: torch.Generator, batch_size: int) -> Automata:
        """One random automaton per row (see the module docstring)."""
        cfg, B = self.cfg, batch_size
        S, Y, V = cfg.max_states, cfg.num_symbols, self.vocab_size
        D = cfg.max_out_degree
        num_states = randint_between(g, cfg.min_states, cfg.max_states, (B,))
        alphabet_size = randint_between(g, cfg.min_alphabet, cfg.max_alphabet, (B,))
        alphabet = torch.rand(B, Y, generator=g).argsort(dim=1)  # row b uses its first a_b ids

        # Each state picks deg distinct slots of its row's alphabet: top-k of uniforms, with
        # slots outside the alphabet scored below every slot inside it.
        degree = randint_between(g, 1, alphabet_size.clamp(max=D).unsqueeze(1), (B, S))
        slot_score = torch.rand(B, S, Y, generator=g)
        outside = torch.arange(Y) >= alphabet_size[:, None, None]
        slots = slot_score.masked_fill(outside, -1.0).topk(D, dim=2).indices  # (B, S, D)
        symbols = alphabet.gather(1, slots.reshape(B, S * D)).reshape(B, S, D)
        weight = torch.empty(B, S, D).exponential_(generator=g)  # normalised: Dirichlet(1)
        weight = weight * (torch.arange(D) < degree.unsqueeze(2))
        probs = torch.zeros(B, S, V).scatter_(2, symbols, weight)  # symbols distinct per state
        probs = probs / probs.sum(dim=2, keepdim=True)

        next_state = randint_between(g, 0, (num_states - 1)[:, None, None], (B, S, V))
        return Automata(probs, next_state)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        cfg, B, L, V = self.cfg, batch_size, self.cfg.seq_len, self.vocab_size
        S = cfg.max_states
        g = self.generator(split, step, seed)
        auto = self.sample_automata(g, B)

        # One extra token so that position L - 1 has a next-token target.
        total = L + 1
        string_len = randint_between(g, cfg.min_string_len, cfg.max_string_len, (B, total))
        uniform = torch.rand(B, total, 1, generator=g, dtype=torch.float64)
        cdf = _sampling_cdf(auto.probs).reshape(B * S, V)  # rows indexed by b * S + state
        next_flat = auto.next_state.reshape(-1)  # indexed by (b * S + state) * V + symbol
        tokens = torch.empty(B, total, dtype=torch.long)
        states = torch.empty(B, total, dtype=torch.long)
        row_base = torch.arange(B) * S
        state = torch.zeros(B, dtype=torch.long)
        left = torch.zeros(B, dtype=torch.long)  # symbols still to emit in the current string
        for t in range(total):  # a Markov chain: a loop over positions, batched over rows
            flat = row_base + state
            symbol = (cdf[flat] <= uniform[:, t]).sum(dim=1)  # inverse-CDF draw
            starts = left == 0  # emit a delimiter, then a new string from state 0
            tokens[:, t] = torch.where(starts, self.delimiter, symbol)
            state = torch.where(starts, 0, next_flat[flat * V + symbol])
            left = torch.where(starts, string_len[:, t], left - 1)
            states[:, t] = state

        inputs, following = tokens[:, :L], tokens[:, 1:]
        after_first_string = (inputs == self.delimiter).cumsum(dim=1) >= 2
        scored = after_first_string & (following != self.delimiter)
        targets = torch.where(scored, following, IGNORE)
        state_after = states[:, :L]
        next_dist = auto.probs.gather(1, state_after.unsqueeze(2).expand(B, L, V))
        return ProbeBatch(inputs, targets, {"next_dist": next_dist, "state": state_after})

    def score(self, logits: Tensor, batch: ProbeBatch) -> dict[str, float]:
        """Validity of the argmax symbol and total variation to the true distribution.

        logits: (B, L, V) or (N, V) at the scored positions (row-major).
        """
        mask = batch.targets != IGNORE
        dist = batch.extra["next_dist"][mask][:, : self.cfg.num_symbols].float()  # (N, Y)
        if logits.dim() == 3:
            logits = logits[mask]
        symbol_logits = logits[:, : self.cfg.num_symbols].float()  # drop the delimiter
        pred = symbol_logits.argmax(dim=-1, keepdim=True)
        correct = dist.gather(1, pred) > 0
        tv = 0.5 * (symbol_logits.softmax(dim=-1) - dist).abs().sum(dim=-1)
        return {"correct": float(correct.sum().item()), "count": float(mask.sum().item()),
                "tv_sum": float(tv.sum().item())}

    @staticmethod
    def metrics(totals: dict[str, float]) -> dict[str, float]:
        count = max(totals["count"], 1.0)
        return {"accuracy": totals["correct"] / count, "tv": totals["tv_sum"] / count}


def _sampling_cdf(probs: Tensor) -> Tensor:
    """Cumulative probabilities (float64) for inverse-CDF draws with u in [0, 1).

    The draw is the number of entries <= u. Zero-probability entries repeat the previous
    value exactly, so they are never drawn; entries from the last positive one on are set
    to 2 so that rounding (a total of 0.9999999) can never push a draw past it.
    """
    cdf = probs.double().cumsum(dim=-1)
    positive = (probs > 0).long()
    positives_after = positive.flip(-1).cumsum(-1).flip(-1) - positive
    return cdf.masked_fill(positives_after == 0, 2.0)

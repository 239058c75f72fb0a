"""What every drafter trained on the target's hidden states shares.

A trained drafter reads the target's own last hidden states (``features`` of the
decoding protocol), so it needs no second model: the target already computed them
while verifying the previous round. It maps them to *pseudo hidden states* of the
next tokens and decodes those with a copy of the target's head restricted to the
``draft_vocab`` most frequent tokens (the target's rows, frozen: "tied"). The
restriction is what makes drafting cheap on a CPU: SmolLM2's full head (49,152 rows)
costs a quarter of a target step, a 4,096-row subset a fiftieth. A drafter can then
only propose tokens of its subset; verification stays lossless either way, because
its probabilities ``q`` are exact (zero outside the subset).

Subclasses (one file each, one line in ``seqlab.decoding.drafters.TRAINED``) define
``pseudo(ctx)`` -- all ``depth`` pseudo hidden states at once, from the context alone
-- or, when ``autoregressive``, ``step(ctx, trigram, j)`` for the j-th draft token
given the three tokens before it (the draft's own tokens included). Training, with the
loss every kind shares, is in ``seqlab.decoding.drafters.train``.

Example:
    >>> drafter = seqlab.decoding.drafters.load("drafters/smollm2-heads")
    >>> seqlab.decoding.generate(model, prompts, "speculative", 64, draft=drafter)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.config import Config, ConfigError, option, require
from seqlab.decoding.sampling import SamplingConfig, probabilities

WEIGHTS = "drafter.safetensors"
CONFIG = "drafter.json"


@dataclass(frozen=True)
class DrafterConfig(Config):
    """The shape of a trained drafter; the same fields for every kind (``width`` and
    ``window`` mean what the kind's docstring says)."""

    kind: str = option("heads", "which drafter (a name of seqlab.decoding.drafters.TRAINED)")
    hidden_size: int = option(64, "the target's hidden size (its features' last dimension)")
    vocab_size: int = option(256, "the target's vocabulary size")
    draft_vocab: int = option(256, "rows of the drafter's head: the most frequent tokens")
    depth: int = option(4, "tokens drafted per round at most")
    window: int = option(1, "the target's last hidden states the drafter reads")
    width: int = option(128, "inner width of the drafter's layers")
    target: str = option("", "the target it was trained on (a name, for messages)")

    def validate(self) -> None:
        require(self.hidden_size >= 1, self, "hidden_size", "an int >= 1")
        require(self.vocab_size >= 1, self, "vocab_size", "an int >= 1")
        require(1 <= self.draft_vocab <= self.vocab_size, self, "draft_vocab",
                f"an int in [1, vocab_size={self.vocab_size}]")
        require(self.depth >= 1, self, "depth", "an int >= 1 (tokens drafted per round)")
        require(self.window >= 1, self, "window", "an int >= 1")
        require(self.width >= 1, self, "width", "an int >= 1")


@dataclass
class Context:
    """What the target gives a drafter for one round, per row.

    Attributes:
        hidden: (R, W, H) the target's last W hidden states, oldest first; the last one is
            at the position whose head chose ``tokens[:, -1]``.
        mask: (R, W) which of them are real (a prompt shorter than W has fewer).
        tokens: (R, 3) the last three tokens, the last one being the token just chosen (not
            yet run by the target); a prompt shorter than that is padded with 0 in front.
        scratch: what a drafter computes once per round and reads at every draft step
            (Chimera: its keys and values of the hidden states).
    """

    hidden: Tensor
    mask: Tensor
    tokens: Tensor
    scratch: dict = field(default_factory=dict)


class HiddenDrafter(nn.Module):
    """Base of the trained drafters (see the module docstring)."""

    autoregressive = False   # True: ``step`` per draft token; False: ``pseudo`` for all at once

    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.cfg = cfg
        # The target's head rows for the draft vocabulary (frozen; set by the trainer).
        self.register_buffer("vocab_ids", torch.arange(cfg.draft_vocab))
        self.register_buffer("head_weight", torch.zeros(cfg.draft_vocab, cfg.hidden_size))
        self.register_buffer("head_bias", torch.zeros(cfg.draft_vocab))
        # token id -> its row in the draft vocabulary, draft_vocab for every other token
        self.register_buffer("slot", torch.arange(cfg.vocab_size).clamp(max=cfg.draft_vocab))

    # -- what a kind defines -----------------------------------------------------------------
    def pseudo(self, ctx: Context) -> Tensor:
        """(R, depth, H): pseudo hidden states of the next ``depth`` tokens after ctx.tokens[:, -1]."""
        raise NotImplementedError

    def step(self, ctx: Context, trigram: Tensor, j: int) -> Tensor:
        """(R, H): the pseudo hidden state of draft token ``j`` (0-based) after ``trigram (R, 3)``."""
        raise NotImplementedError

    def pseudo_teacher(self, ctx: Context, trigrams: Tensor) -> Tensor:
        """Training: (R, depth, H) with every draft step's trigram given, ``trigrams (R, depth, 3)``
        (teacher forcing). Non-autoregressive kinds ignore the trigrams."""
        if not self.autoregressive:
            return self.pseudo(ctx)
        return torch.stack([self.step(ctx, trigrams[:, j], j) for j in range(self.cfg.depth)], 1)

    # -- shared --------------------------------------------------------------------------------
    def set_head(self, vocab_ids: Tensor, weight: Tensor, bias: Tensor | None) -> None:
        """Copy the target's head rows ``weight (N, H)`` (and bias) for tokens ``vocab_ids (N,)``."""
        self.vocab_ids.copy_(vocab_ids)
        self.slot.fill_(self.cfg.draft_vocab)
        self.slot[vocab_ids] = torch.arange(len(vocab_ids), device=self.slot.device)
        self.head_weight.copy_(weight)
        self.head_bias.copy_(bias if bias is not None else torch.zeros_like(self.head_bias))

    def small_logits(self, pseudo: Tensor) -> Tensor:
        """(..., draft_vocab) logits of pseudo hidden states over the draft vocabulary."""
        return pseudo @ self.head_weight.to(pseudo.dtype).T + self.head_bias.to(pseudo.dtype)

    def full_logits(self, small: Tensor) -> Tensor:
        """(..., vocab_size) logits: the small ones in place, -inf for every other token."""
        out = small.new_full(small.shape[:-1] + (self.cfg.vocab_size,), float("-inf"))
        out[..., self.vocab_ids] = small
        return out

    def choose(self, small: Tensor, sampling: SamplingConfig, generator
               ) -> tuple[Tensor, Tensor | None]:
        """Draw one token per row from ``small (R, N)``: (tokens (R,), q (R, V) or None when greedy)."""
        if sampling.greedy:
            return self.vocab_ids[small.argmax(-1)], None
        q = probabilities(self.full_logits(small), sampling)
        return torch.multinomial(q, 1, generator=generator).squeeze(1), q

    def propose(self, ctx: Context, k: int, sampling: SamplingConfig, generator
                ) -> tuple[Tensor, Tensor | None]:
        """``k <= depth`` draft tokens per row (R, k) and their probabilities (R, k, V) (None
        when greedy: every proposal is a point mass)."""
        R = ctx.tokens.shape[0]
        if self.autoregressive:
            trigram, toks, qs = ctx.tokens, [], []
            for j in range(k):
                t, q = self.choose(self.small_logits(self.step(ctx, trigram, j)), sampling, generator)
                toks.append(t)
                qs.append(q)
                trigram = torch.cat([trigram[:, 1:], t[:, None]], 1)
        else:
            small = self.small_logits(self.pseudo(ctx)[:, :k])          # (R, k, N)
            pairs = [self.choose(small[:, j], sampling, generator) for j in range(k)]
            toks, qs = [p[0] for p in pairs], [p[1] for p in pairs]
        if not k:
            return torch.zeros(R, 0, dtype=torch.long, device=ctx.tokens.device), None
        return torch.stack(toks, 1), None if sampling.greedy else torch.stack(qs, 1)

    def check_target(self, model) -> None:
        """ConfigError unless ``model`` can serve this drafter (features, same vocabulary)."""
        name = self.cfg.target or "its target"
        if not model.capabilities.features:
            raise ConfigError(f"a trained drafter ({self.cfg.kind}) reads the target's hidden "
                              f"states, but the target ({type(model).__name__}) does not declare "
                              "the features capability; use a seqlab LM, or a draft model")
        if model.vocab_size != self.cfg.vocab_size:
            raise ConfigError(f"the drafter was trained for {name} with vocab_size "
                              f"{self.cfg.vocab_size}, but this target has {model.vocab_size}; "
                              "train one for this target: seqlab train-draft TARGET --kind "
                              f"{self.cfg.kind}")

    def check_hidden(self, hidden: Tensor) -> None:
        """ConfigError when the target's hidden states are not the size the drafter was trained on."""
        if hidden.shape[-1] != self.cfg.hidden_size:
            raise ConfigError(f"the drafter was trained on {self.cfg.target or 'a target'} with "
                              f"hidden size {self.cfg.hidden_size}, but this target's hidden states "
                              f"have {hidden.shape[-1]}; train one for this target: seqlab "
                              f"train-draft TARGET --kind {self.cfg.kind}")

    def save(self, folder: str | Path) -> Path:
        """Weights as safetensors and ``{"kind", "config"}`` as JSON into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps({"kind": self.cfg.kind, "config": self.cfg.to_dict()},
                                                indent=2) + "\n")
        return folder


def build(cfg: DrafterConfig) -> HiddenDrafter:
    """A fresh drafter of ``cfg.kind``; ConfigError for an unknown kind."""
    from seqlab.decoding.drafters import TRAINED

    if cfg.kind not in TRAINED:
        raise ConfigError(f"unknown drafter kind {cfg.kind!r}; known kinds: "
                          f"{', '.join(sorted(TRAINED))}")
    return TRAINED[cfg.kind](cfg)


def load(folder: str | Path) -> HiddenDrafter:
    """A drafter saved by ``HiddenDrafter.save`` (or ``seqlab train-draft``).

    Raises:
        FileNotFoundError: no drafter in ``folder`` (says what was looked for).
        ConfigError: an unknown kind or a config that does not validate.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no trained drafter in {folder}: expected {CONFIG} and {WEIGHTS} "
                                "there (written by seqlab train-draft)")
    meta = json.loads((folder / CONFIG).read_text())
    drafter = build(DrafterConfig.from_dict(meta["config"]))
    drafter.load_state_dict(load_file(str(folder / WEIGHTS)))
    return drafter.eval()

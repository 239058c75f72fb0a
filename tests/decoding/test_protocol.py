"""The decoding protocol on a model that is not a seqlab LM, written from the README section
"Decoding any model" alone: every strategy runs on it, the lossless ones greedy-equal; and
nothing under seqlab/decoding/ imports a model or a mixer."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import seqlab
from seqlab.decoding import STRATEGIES, Capabilities, generate
from seqlab.state import State

V = 7


@dataclass(frozen=True)
class TinyState(State):
    h: Tensor  # (B, H): a recurrent state, so it cannot rewind


class TinyRNN(nn.Module):
    """h_t = tanh(E[x_t] + U h_{t-1}); logits_t = W h_t. Not a seqlab LM or mixer."""

    capabilities = Capabilities()
    max_length = None

    def __init__(self, vocab_size: int = V, hidden: int = 12, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.E = nn.Parameter(torch.randn(vocab_size, hidden, generator=g, dtype=torch.float64))
        self.U = nn.Parameter(0.5 * torch.randn(hidden, hidden, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(2 * torch.randn(hidden, vocab_size, generator=g, dtype=torch.float64))

    @property
    def device(self) -> torch.device:
        return self.E.device

    def init_state(self, batch_size, *, device=None, dtype=None) -> TinyState:
        return TinyState(torch.zeros(batch_size, self.E.shape[1], dtype=torch.float64,
                                     device=device or self.device))

    def forward(self, tokens, state=None, *, last_only=False):
        h = (state or self.init_state(tokens.shape[0])).h
        outs = []
        for t in range(tokens.shape[1]):
            h = torch.tanh(self.E[tokens[:, t]] + h @ self.U)
            outs.append(h @ self.W)
        logits = torch.stack(outs, 1)
        return (logits[:, -1] if last_only else logits), TinyState(h)

    def step(self, token, state):
        logits, state = self(token[:, None], state)
        return logits[:, 0], state


PROMPTS = [[1, 2, 3, 1, 2], [4], [0, 5, 0, 5, 0, 5]]
LOSSLESS = ["speculative", "tree", "prompt-lookup", "ngram", "ngram-tree"]


def test_every_strategy_runs_and_the_lossless_ones_equal_greedy():
    m, d = TinyRNN(seed=0), TinyRNN(seed=1)
    plain = generate(m, PROMPTS, "greedy", 12)
    assert [len(t) for t in plain.tokens] == [12] * 3
    # greedy is the argmax continuation, computed here without the engine
    with torch.no_grad():
        for row, out in zip(PROMPTS, plain.tokens):
            seq = list(row)
            for _ in range(12):
                seq.append(int(m(torch.tensor([seq]))[0][0, -1].argmax()))
            assert out == seq[len(row):]
    drafts = {"speculative": d, "tree": d}
    for name in LOSSLESS:
        out = generate(m, PROMPTS, name, 12, draft=drafts.get(name))
        assert out.tokens == plain.tokens, name
        assert out.stats.verify_calls > 0
    assert generate(m, PROMPTS, "tree", 12, draft=m, branching=(2, 1)).tokens == plain.tokens
    beam1 = generate(m, PROMPTS, "beam", 12, num_beams=1, length_penalty=0.0)
    assert beam1.tokens == plain.tokens  # one beam is greedy
    wide = generate(m, PROMPTS, "beam", 6, num_beams=4, length_penalty=0.0)
    for b in range(3):  # a wider beam never finds a less likely sequence than greedy
        assert wide.stats.scores[b] >= _logprob(m, PROMPTS[b], plain.tokens[b][:6]) - 1e-9
    div = generate(m, PROMPTS, "diverse-beam", 6, num_beams=4, num_groups=2)
    assert {h["group"] for h in div.stats.nbest[0]} == {0, 1}
    sampled = generate(m, PROMPTS, "sample", 12, seed=0)
    assert sampled.tokens != plain.tokens and all(len(t) == 12 for t in sampled.tokens)
    assert set(STRATEGIES) == set(LOSSLESS) | {"greedy", "sample", "beam", "diverse-beam"}


def _logprob(m, prompt, tokens):
    with torch.no_grad():
        logp = m(torch.tensor([prompt + tokens]))[0][0].log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))


def test_a_seqlab_lm_drafts_for_a_foreign_target():
    m = TinyRNN(seed=0)
    torch.manual_seed(0)
    lm = seqlab.models.build_lm(vocab_size=V, dim=16, layers=["attention", "gru"]).double()
    plain = generate(m, PROMPTS, "greedy", 10).tokens
    assert generate(m, PROMPTS, "speculative", 10, draft=lm, gamma=3).tokens == plain
    assert generate(lm, PROMPTS, "speculative", 10, draft=m, gamma=3).tokens == \
        generate(lm, PROMPTS, "greedy", 10).tokens


def test_a_model_without_the_protocol_is_named():
    class NoStep(nn.Module):
        vocab_size, max_length, capabilities = V, None, Capabilities()

        def forward(self, tokens, state=None, *, last_only=False):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="lacks device, init_state, step"):
        generate(NoStep(), [[1]], "greedy", 3)
    m = TinyRNN()
    m.capabilities = {"tree": True}
    with pytest.raises(TypeError, match="Capabilities"):
        generate(m, [[1]], "greedy", 3)


def test_decoding_imports_no_model_or_mixer():
    root = Path(seqlab.__file__).parent / "decoding"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for n in names:
                assert not n.startswith(("seqlab.models", "seqlab.mixers")), f"{path}: {n}"

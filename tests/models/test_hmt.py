"""The Hierarchical Memory Transformer: both faces equal in float64 and equal to an explicit
segment-by-segment reference, causality, a window that never grows, memory that carries
information past it, wrapping an existing LM, save/load, training, and every decoding
strategy lossless at batch > 1 with ragged prompts."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.models.hmt import HMT, HMTConfig
from seqlab.models.lm import LMConfig, build_lm

V = 40
BACKBONE = LMConfig(vocab_size=V, dim=32, layers="attention(heads=2)+mamba(d_state=4)", mlp_hidden=48)


def make(dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    opts = {"segment": 5, "sensory": 2, "query": 3, "memories": 2, "recall_dim": 8, **options}
    model = HMT(HMTConfig(backbone=BACKBONE, **opts)).to(dtype).eval()
    with torch.no_grad():  # off the init, so a swapped part cannot hide
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("T, memories", [(4, 2), (15, 2), (17, 2), (17, 0)])
@torch.no_grad()
def test_parallel_equals_steps_and_chunks(T, memories):
    model = make(memories=memories)
    tokens = torch.randint(0, V, (3, T))
    full, state_par = model(tokens)
    state, steps = model.init_state(3, dtype=torch.float64), []
    for t in range(T):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)
    _, s = model(tokens[:, :3])
    rest, _ = model(tokens[:, 3:], s)
    torch.testing.assert_close(rest, full[:, 3:], atol=1e-10, rtol=1e-10)
    more = torch.randint(0, V, (3, 7))   # the parallel face's state continues like the stepped one
    torch.testing.assert_close(model(more, state_par)[0], model(more, state)[0], atol=1e-10, rtol=1e-10)


def reference(model: HMT, tokens: torch.Tensor) -> torch.Tensor:
    """HMT written out for one row: windows of token ids, a list of memories, a loop."""
    cfg, lm = model.cfg, model.lm
    S, k, q, N = cfg.segment, cfg.sensory, cfg.query, cfg.memories
    memories, outs, P = [], [], model.no_memory
    segments = [tokens[i:i + S] for i in range(0, len(tokens), S)]
    for n, seg in enumerate(segments):
        sensory = segments[n - 1][S - k:] if n and k else tokens[:0]
        x = torch.cat([P[None], lm.embed(sensory), lm.embed(seg)])
        h, _ = lm.features_of_vectors(x[None])
        outs.append(lm.head(h[0, 1 + len(sensory):]))
        if len(seg) < S or N == 0:
            continue
        h, _ = lm.features_of_vectors(torch.cat([x, model.summary[None]])[None])
        memories = (memories + [h[0, -1]])[-N:]
        qh, _ = lm.features_of_vectors(torch.cat([lm.embed(seg[S - q:]), model.summary[None]])[None])
        query = model.recall_q(qh[0, -1])
        weights = torch.stack([query @ model.recall_k(m) for m in memories]) / cfg.recall_dim ** 0.5
        P = (weights.softmax(0)[:, None] * torch.stack(memories)).sum(0)
        if cfg.recall_in == "residual":
            unit = P / P.pow(2).mean().add(1e-6).sqrt()
            P = model.no_memory + model.recall_gate * (model.recall_out.weight @ unit)
    return torch.cat(outs)


@pytest.mark.parametrize("memories, recall_in", [(0, "residual"), (2, "residual"), (2, "direct")])
@torch.no_grad()
def test_equals_the_explicit_reference(memories, recall_in):
    model = make(memories=memories, recall_in=recall_in)
    tokens = torch.randint(0, V, (2, 23))   # four full segments: the oldest memory is dropped
    full, _ = model(tokens)
    for b in range(2):
        torch.testing.assert_close(full[b], reference(model, tokens[b]), atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_causal_and_memory_reaches_past_the_window():
    model = make()
    tokens = torch.randint(0, V, (1, 22))
    base, _ = model(tokens)
    for p in (0, 6, 13):
        changed = tokens.clone()
        changed[0, p] = (changed[0, p] + 1) % V
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :p], base[:, :p], atol=0, rtol=0)
        assert (out[:, p:] - base[:, p:]).abs().max() > 1e-6
    # Token 0 is outside every window from segment 2 on; only memory carries it there.
    changed = tokens.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    assert (model(changed)[0][:, 15:] - base[:, 15:]).abs().max() > 1e-6
    # Without memory, nothing before the window reaches it.
    ablated = make(memories=0)
    torch.testing.assert_close(ablated(changed)[0][:, 15:], ablated(tokens)[0][:, 15:], atol=0, rtol=0)
    no_recall = make(memories=1)
    no_recall.recall_q.weight.zero_()    # memory still flows, through the single slot
    assert (no_recall(changed)[0][:, 15:] - no_recall(tokens)[0][:, 15:]).abs().max() > 1e-6


@torch.no_grad()
def test_an_untuned_residual_recall_reads_as_the_window_without_memory():
    """The gate starts at zero: a fresh HMT's logits are the no-memory window's (to rounding: a
    full segment's window is one vector longer, for T), and the gate's gradient is not zero,
    so tuning can bring the memory in."""
    torch.manual_seed(0)
    cfg = dict(segment=5, sensory=2, query=3, recall_dim=8)
    fresh = HMT(HMTConfig(backbone=BACKBONE, memories=2, **cfg)).double()
    window = HMT(HMTConfig(backbone=BACKBONE, memories=0, **cfg), backbone=fresh.lm).double()
    window.no_memory.copy_(fresh.no_memory)
    tokens = torch.randint(0, V, (2, 23))
    torch.testing.assert_close(fresh(tokens)[0], window(tokens)[0], atol=1e-12, rtol=0)
    direct = HMT(HMTConfig(backbone=BACKBONE, memories=2, recall_in="direct", **cfg),
                 backbone=fresh.lm).double()
    assert (direct(tokens)[0] - window(tokens)[0]).abs().max() > 1e-3
    with torch.enable_grad():
        logits, _ = fresh(tokens)
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1)).backward()
    assert fresh.recall_gate.grad.abs().max() > 0


@torch.no_grad()
def test_the_window_never_grows():
    model = make(segment=4, sensory=2)
    state = model.init_state(1, dtype=torch.float64)
    longest = 0
    for t in torch.randint(0, V, (30,)):
        _, state = model.step(t[None], state)
        longest = max(longest, max(state.lm.layers[0].lengths))
    assert longest == 1 + 2 + 4 - 1   # P, the sensory tokens, a segment less its last token
    assert model.state_bytes(10_000) == model.state_bytes(10_000 + 4 * 100)


@torch.no_grad()
def test_wrap_shares_the_lms_weights():
    torch.manual_seed(1)
    lm = build_lm(vocab_size=V, dim=32, layers="attention(heads=2)*2").double().eval()
    model = HMT.wrap(lm, segment=8, sensory=0, query=2)
    assert model.lm is lm and model.cfg.backbone == lm.cfg
    tokens = torch.randint(0, V, (2, 6))   # within the first segment: the LM after P_0
    x = torch.cat([model.no_memory.expand(2, 1, 32), lm.embed(tokens)], 1)
    want = lm.head(lm.features_of_vectors(x)[0][:, 1:])
    torch.testing.assert_close(model(tokens)[0], want, atol=1e-12, rtol=0)


def test_save_load_roundtrip(tmp_path):
    model = make(dtype=torch.float32)
    seqlab.models.save(model, tmp_path / "m")
    back = seqlab.models.load(tmp_path / "m")
    assert isinstance(back, HMT) and back.cfg == model.cfg
    tokens = torch.randint(0, V, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens)[0], model(tokens)[0], atol=0, rtol=0)


def test_trains_with_the_trainer(small_corpus, tmp_path):
    from seqlab.models import load
    from seqlab.train.checkpoint import latest_checkpoint
    from seqlab.train.trainer import Trainer
    from tests.train.conftest import tiny_run

    model = {"kind": "hmt", "segment": 8, "sensory": 2, "query": 4, "memories": 4,
             "recall_dim": 8, "backbone": {"dim": 32, "layers": "attention(heads=2)", "mlp_hidden": 48}}
    result = Trainer(tiny_run(small_corpus, tmp_path / "run", model, steps=3, eval_every=3),
                     progress=False).fit()
    assert len(result.losses) == 3 and all(loss == loss for loss in result.losses)
    saved = load(latest_checkpoint(tmp_path / "run"))
    assert isinstance(saved, HMT) and saved.vocab_size == 256 and saved.cfg.segment == 8
    # gradients reach the memory parts through later segments
    saved.train()
    x = torch.randint(0, 256, (2, 33))
    logits, _ = saved(x)
    logits[:, 16:].sum().backward()
    assert saved.recall_k.weight.grad.abs().sum() > 0 and saved.summary.grad.abs().sum() > 0


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3, 4, 6, 7], [7, 8, 9, 7, 8]]


def manual_greedy(model, prompt, n):
    out = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([out]))
            out.append(int(logits[0, -1].argmax()))
    return out[len(prompt):]


@pytest.mark.parametrize("strategy, options", [
    ("greedy", {}), ("speculative", {"gamma": 3}), ("prompt-lookup", {}), ("ngram", {}),
    ("beam", {"num_beams": 1}),
])
def test_strategies_are_lossless(strategy, options):
    model = make(dtype=torch.float32)
    want = [manual_greedy(model, p, 12) for p in PROMPTS]
    kw = {}
    if strategy == "speculative":  # a draft of another kind: a plain LM on the same vocabulary
        torch.manual_seed(9)
        kw = {"draft": build_lm(vocab_size=V, dim=16, layers="attention(heads=2)").eval(),
              "temperature": 0}
    assert generate(model, PROMPTS, strategy, 12, **kw, **options).tokens == want


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="HMTConfig.sensory = 9"):
        HMTConfig(segment=8, sensory=9)
    with pytest.raises(ConfigError, match="HMTConfig.query = 0"):
        HMTConfig(query=0)
    with pytest.raises(ConfigError, match="read token ids"):
        HMT(HMTConfig(backbone=LMConfig(layers="ngram+attention")))

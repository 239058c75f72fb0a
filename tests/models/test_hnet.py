"""H-Net: both faces equal in float64 (hard boundaries included), boundaries and logits causal,
the smoothing EMA against its recurrence, the ratio loss and its path into the gradient,
save/load, training through the Trainer and the CLI (resumed exactly), and every decoding
strategy lossless on it at batch > 1 with ragged prompts (a plain LM of the same vocabulary
as the draft)."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.cli import main
from seqlab.decoding import generate
from seqlab.models.hnet import HNet, HNetConfig, _smooth
from seqlab.train.checkpoint import latest_checkpoint
from seqlab.train.trainer import Trainer
from tests.train.conftest import tiny_run

V = 40
CONFIGS = {
    # the paper's layout: recurrent byte level, attention over chunks, a wider main network
    "mamba-attention": dict(encoder_layers="mamba(d_state=4)", layers="attention(heads=2)*2",
                            decoder_layers="mamba(d_state=4)", dim=24),
    # a recurrent main network: its state after rows of unequal chunk counts is recomputed
    "recurrent-main": dict(encoder_layers="gru", layers="mamba(d_state=4)+attention(heads=2)",
                           decoder_layers="attention(heads=2)", dim=16, mlp_hidden=16),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: a second intra-op thread only waits (one H-Net step took 5.6 ms
    on one thread, 319 ms on two of a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name="mamba-attention", dtype=torch.float64, seed=0, **over):
    torch.manual_seed(seed)
    model = HNet(HNetConfig(**{"vocab_size": V, "byte_dim": 16, **CONFIGS[name], **over}))
    model = model.to(dtype).eval()
    with torch.no_grad():  # off the init (zero residual, identity router), so no part hides
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_parallel_equals_steps_and_chunks(name):
    model = make(name)
    tokens = torch.randint(0, V, (3, 14))
    full, par = model(tokens)
    assert len(set(par.chunks)) > 1 and min(par.chunks) < 14   # ragged rows, real chunks
    state, steps = model.init_state(3, dtype=torch.float64), []
    for t in range(14):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)
    assert state.chunks == par.chunks == tuple(model.boundaries(tokens)[1].sum(1).tolist())
    for a, b in ((par.key, state.key), (par.z, state.z)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # chunks after a fresh prefix (the prefix's state comes from the parallel face)
    _, s = model(tokens[:, :5])
    a, s = model(tokens[:, 5:9], s)
    b, s = model(tokens[:, 9:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full[:, 5:], atol=1e-10, rtol=1e-10)
    # the parallel face's state continues exactly like the stepped one
    more = torch.randint(0, V, (3, 5))
    torch.testing.assert_close(model(more, par)[0], model(more, state)[0], atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_boundaries_depend_only_on_the_past():
    model = make()
    tokens = torch.randint(0, V, (2, 16))
    p, b = model.boundaries(tokens)
    assert b[:, 0].all() and (p[:, 0] == 1).all() and 0 < b.sum() < b.numel()
    assert torch.equal(b, p >= 0.5)
    for t in (0, 3, 7, 12):
        changed = tokens.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
        p2, b2 = model.boundaries(changed)
        assert torch.equal(p2[:, :t + 1], p[:, :t + 1]) and torch.equal(b2[:, :t + 1], b[:, :t + 1])
        assert not torch.equal(p2[:, t + 1:], p[:, t + 1:])


@torch.no_grad()
def test_causal():
    model = make("recurrent-main")
    tokens = torch.randint(0, V, (2, 13))
    base, _ = model(tokens)
    for p in (0, 3, 4, 9):
        changed = tokens.clone()
        changed[:, p + 1:] = (changed[:, p + 1:] + 1) % V
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :p + 1], base[:, :p + 1], atol=0, rtol=0)
        assert not torch.allclose(out[:, p + 1:], base[:, p + 1:])


def test_smoothing_is_the_ema_recurrence():
    x = torch.randn(2, 9, 5, dtype=torch.float64)
    P = torch.rand(2, 9, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
    z, want = torch.zeros(2, 5, dtype=torch.float64), []
    for j in range(9):
        z = P[:, j, None] * x[:, j] + (1 - P[:, j, None]) * z
        want.append(z)
    torch.testing.assert_close(_smooth(x, P), torch.stack(want, 1), atol=1e-12, rtol=1e-12)


@torch.no_grad()
def test_ragged_prefill_state_matches_separate_rows():
    model = make("recurrent-main")
    rows = [torch.randint(0, V, (n,)) for n in (7, 11)]
    states = [model(r[None])[1] for r in rows]
    joined = type(states[0]).cat(states)
    nxt = torch.tensor([3, 5])
    logits, _ = model.step(nxt, joined)
    for b in range(2):
        want, _ = model.step(nxt[b:b + 1], states[b])
        torch.testing.assert_close(logits[b:b + 1], want, atol=1e-10, rtol=1e-10)


def test_ratio_loss_and_its_gradient():
    model = make(dtype=torch.float32)
    N = model.cfg.ratio_target
    p = torch.full((1, 60), 1 / N)
    b = torch.arange(60)[None] % int(N) == 0            # F = G = 1/N: the minimum, 1
    assert float(model.ratio_loss(p, b)) == pytest.approx(1.0)
    every = torch.ones(1, 60, dtype=torch.bool)
    assert float(model.ratio_loss(torch.full((1, 60), 0.9), every)) > 1
    tokens = torch.randint(0, V, (2, 24))
    model(tokens)
    assert model.aux_loss is None                        # eval: no auxiliary loss
    model.train()
    logits, _ = model(tokens)
    assert model.aux_loss is not None and model.aux_loss.dim() == 0
    # the ratio loss reaches the router (and the encoder under it) ...
    model.aux_loss.backward(retain_graph=True)
    for part in (model.router_q, model.router_k, model.encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # ... and so does the cross-entropy, through the confidence (STE) and the EMA
    model.zero_grad()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    ce.backward()
    assert model.router_q.weight.grad.abs().sum() > 0
    model(tokens, model.init_state(2))                   # a chunk after a state: no aux loss
    assert model.aux_loss is None


def test_save_load_roundtrip(tmp_path):
    model = make("recurrent-main", dtype=torch.float32)
    seqlab.models.save(model, tmp_path / "m")
    back = seqlab.models.load(tmp_path / "m")
    assert isinstance(back, HNet) and back.cfg == model.cfg
    tokens = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens)[0], model(tokens)[0], atol=0, rtol=0)


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3, 4], [7, 8, 9, 7, 8]]


def manual_greedy(model, prompt, n):
    out = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([out]))
            out.append(int(logits[0, -1].argmax()))
    return out[len(prompt):]


@pytest.fixture(scope="module")
def greedy_case():
    """The model of the strategy tests and its greedy continuations, computed once."""
    model = make("recurrent-main", dtype=torch.float32)
    return model, [manual_greedy(model, p, 12) for p in PROMPTS]


@pytest.mark.parametrize("strategy, options", [
    ("greedy", {}), ("speculative", {"gamma": 3}), ("prompt-lookup", {}), ("ngram", {}),
    ("beam", {"num_beams": 1}),
])
def test_strategies_are_lossless(greedy_case, strategy, options):
    model, want = greedy_case
    kw = {}
    if strategy == "speculative":  # a draft of another kind: a plain LM on the same vocabulary
        torch.manual_seed(9)
        kw = {"draft": seqlab.models.build_lm(vocab_size=V, dim=16, layers="attention(heads=2)").eval(),
              "temperature": 0}
    assert generate(model, PROMPTS, strategy, 12, **kw, **options).tokens == want


def test_sampling_is_seeded():
    model = make(dtype=torch.float32)
    a = generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a == generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a != generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=4).tokens


def test_bad_options_are_named():
    with pytest.raises(seqlab.config.ConfigError, match="ratio_target"):
        HNetConfig(ratio_target=1)
    with pytest.raises(seqlab.config.ConfigError, match=r"HNetConfig.dim = 64 .*byte_dim = 128"):
        HNetConfig(byte_dim=128, dim=64)
    with pytest.raises(seqlab.config.ConfigError, match="encoder_layers"):
        HNetConfig(encoder_layers="nosuchmixer")


TINY_HNET = {"kind": "hnet", "byte_dim": 16, "encoder_layers": "mamba(d_state=4)",
             "decoder_layers": "mamba(d_state=4)", "dim": 24, "layers": "attention(heads=2)*2",
             "mlp_hidden": 32, "ratio_target": 4}


def test_trainer_runs_resumes_exactly_and_adds_the_ratio_loss(small_corpus, tmp_path):
    run = dict(steps=3, eval_every=3, ckpt_every=2, eval_tokens=256)
    whole = Trainer(tiny_run(small_corpus, tmp_path / "a", TINY_HNET, **run), progress=False).fit()
    assert len(whole.losses) == 3 and whole.evals[-1]["bpb"] > 0
    saved = seqlab.models.load(latest_checkpoint(tmp_path / "a"))
    assert isinstance(saved, HNet) and saved.cfg.ratio_target == 4
    on = Trainer(tiny_run(small_corpus, tmp_path / "b", TINY_HNET, **run), progress=False)
    first = on.fit(stop_at=2)
    on.close()                                          # its lock, so the run can resume
    rest = Trainer(tiny_run(small_corpus, tmp_path / "b", TINY_HNET, **run), resume=True,
                   progress=False).fit()
    assert first.losses + rest.losses == whole.losses   # exact, not approximate
    # Without the ratio loss the first step's (logged) cross-entropy is the same, the update not.
    off = Trainer(tiny_run(small_corpus, tmp_path / "c", {**TINY_HNET, "ratio_weight": 0.0}, **run),
                  progress=False)
    r = off.fit(stop_at=2)
    assert r.losses[0] == first.losses[0] and r.losses[1] != first.losses[1]
    assert not torch.equal(on.model.router_q.weight, off.model.router_q.weight)


def test_cli_train_info_resume_generate(tmp_path, small_corpus, capsys):
    out = tmp_path / "run"
    argv = ["train", "--quiet", "--model", "hnet", "--data", str(small_corpus), "--dim", "24",
            "--mixers", "attention(heads=2)", "--layers", "2", "--batch-size", "2", "--seq-len", "32",
            "--out", str(out), "--set", "train.eval_tokens=256", "--set", "model.byte_dim=16",
            "--set", "model.encoder_layers=gru", "--set", "model.decoder_layers=gru"]
    assert main(argv + ["--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "family     : hnet" in info
    assert "encoder dim 16, 1 layers, main dim 24, 2 layers, decoder dim 16, 1 layers" in info
    assert "layers     : encoder gru; main attention(heads=2)*2; decoder gru" in info
    assert main(argv + ["--steps", "3", "--resume"]) == 0
    assert "step 3:" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "6",
                 "--strategy", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("def f(")

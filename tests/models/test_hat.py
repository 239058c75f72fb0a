"""The Hierarchical Autoregressive Transformer: its word split against a reference, both faces
equal in float64 on text with spaces, newlines, over-long words and ragged rows, causality,
one backbone step per word, save/load, training through the run config and the CLI, and every
decoding strategy lossless on it at batch > 1 with ragged prompts (a plain LM as the draft)."""

from __future__ import annotations

import random
import re

import pytest
import torch

import seqlab
from seqlab.decoding import generate
from seqlab.models.hat import HAT, HATConfig, split_words, word_positions

CONFIGS = {
    "attention": dict(layers="attention(heads=2)*2"),
    # recurrent backbone and decoder: their states cannot rewind, so ragged rows regroup
    "hybrid": dict(encoder_layers="gru", layers="mamba+attention(heads=2)",
                   decoder_layers="attention(heads=2)+gru"),
    "W1": dict(max_word=1, layers="attention(heads=2)"),
}
TEXTS = [b"def f(x):\n    return x + 1\n\n\nclass Longwordwithoutspaces:  pass",
         b"  if a:\n\tb = c  # d e f\n" + b"z" * 11 + b" \n end",
         b"x" * 40 + b"   y"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: a second intra-op thread only waits (a 32x64 float64 linear
    took 0.05 ms on one thread, 0.9 ms on two of a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name="attention", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    opts = {"max_word": 5, "encoder_dim": 16, "encoder_layers": "attention(heads=2)", "dim": 32,
            "decoder_dim": 16, "decoder_layers": "attention(heads=2)*2", **CONFIGS[name]}
    model = HAT(HATConfig(**opts)).to(dtype).eval()
    with torch.no_grad():  # off the init, so a swapped part cannot hide
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def batch(n: int) -> torch.Tensor:
    """The first ``n`` bytes of each text: equal lengths, different numbers of words."""
    return torch.tensor([list(t[:n]) for t in TEXTS])


def reference_split(data: bytes, max_word: int) -> list[bytes]:
    """Whitespace, other bytes, then one whitespace byte; pieces of at most max_word."""
    pieces = re.findall(rb"\s*\S+\s?|\s+", data)
    return [p[i:i + max_word] for p in pieces for i in range(0, len(p), max_word)]


@pytest.mark.parametrize("max_word", [1, 4, 16])
def test_word_split_matches_reference(max_word):
    rng = random.Random(max_word)
    texts = list(TEXTS) + [bytes(rng.choice(b"ab \n\t\x0b") for _ in range(60)) for _ in range(20)]
    texts += [bytes(rng.randrange(256) for _ in range(60)) for _ in range(5)]
    for t in texts:
        assert split_words(t, max_word) == reference_split(t, max_word), t
    assert split_words(b"    return x\n\n    def", 16) == [b"    return ", b"x\n", b"\n    def"]
    # the byte after the text starts a new word exactly when the last one ended
    assert word_positions(b"ab ", 16)[0][-1] == 1 and word_positions(b"ab", 16)[0][-1] == 0
    assert word_positions(b"   ", 16)[0][-1] == 0 and word_positions(b"abcd", 4)[0][-1] == 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_parallel_equals_steps_and_chunks(name):
    model = make(name)
    tokens = batch(38)
    if model.cfg.max_word > 1:  # rows of one length but of different numbers of words
        assert len({len(split_words(bytes(r), 5)) for r in tokens.tolist()}) == 3
    full, _ = model(tokens)
    state, steps = model.init_state(3, dtype=torch.float64), []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)
    # chunks after a fresh prefix (the prefix's state comes from the parallel face)
    _, s = model(tokens[:, :13])
    a, s = model(tokens[:, 13:21], s)
    b, s = model(tokens[:, 21:], s)
    torch.testing.assert_close(torch.cat([a, b], 1), full[:, 13:], atol=1e-10, rtol=1e-10)
    # the parallel face's state continues exactly like the stepped one
    more = torch.tensor([list(b"ab cdefgh\n i"), list(b"   x y z  .."), list(b"qqqqqqqqqqq ")])
    torch.testing.assert_close(model(more, s)[0], model(more, state)[0], atol=1e-10, rtol=1e-10)
    assert model(tokens, last_only=True)[0].shape == (3, 256)


@torch.no_grad()
def test_causal():
    model = make()
    tokens = batch(30)
    base, _ = model(tokens)
    for p in (0, 3, 4, 9, 17):
        changed = tokens.clone()
        changed[:, p + 1:] = torch.tensor(list(b" a\n"))[torch.arange(29 - p) % 3]
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :p + 1], base[:, :p + 1], atol=0, rtol=0)
        assert not torch.allclose(out[:, p + 1:], base[:, p + 1:])


@torch.no_grad()
def test_backbone_steps_once_per_word():
    model = make()
    tokens = batch(38)
    state = model(tokens)[1]
    words = [len(split_words(bytes(r), 5)) for r in tokens.tolist()]
    unfinished = [int(word_positions(r, 5)[1][-1] > 0) for r in tokens.tolist()]
    want = tuple(w - u + 1 for w, u in zip(words, unfinished))     # finished words + start
    assert state.words == want
    assert {c.lengths for c in state.backbone.layers} == {want}
    assert {c.lengths for c in state.decoder.layers} == {tuple(f + 1 for f in state.filled)}


@torch.no_grad()
def test_ragged_prefill_state_matches_separate_rows():
    model = make("hybrid")
    rows = [torch.tensor(list(TEXTS[0][:n])) for n in (17, 26)]
    states = [model(r[None])[1] for r in rows]
    joined = type(states[0]).cat(states)
    nxt = torch.tensor([32, 97])
    logits, _ = model.step(nxt, joined)
    for b in range(2):
        want, _ = model.step(nxt[b:b + 1], states[b])
        torch.testing.assert_close(logits[b:b + 1], want, atol=1e-10, rtol=1e-10)
    # select repeats rows (beams), each continuing on its own
    picked = joined.select([1, 1, 0])
    logits, _ = model(torch.tensor([list(b" x"), list(b"y\n"), list(b"z ")]), picked)
    for i, b in enumerate([1, 1, 0]):
        want, _ = model(torch.tensor([list([b" x", b"y\n", b"z "][i])]), states[b])
        torch.testing.assert_close(logits[i:i + 1], want, atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_before_the_first_word_ends():
    model = make("hybrid")
    tokens = torch.tensor([list(b"  ab"), list(b"\n\n\t ")])     # max_word is 5
    full, state = model(tokens)
    assert state.words == (1, 1) and state.filled == (4, 4) and state.text == (True, False)
    s, steps = model.init_state(2, dtype=torch.float64), []
    for t in range(4):
        logits, s = model.step(tokens[:, t], s)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)


def test_save_load_roundtrip(tmp_path):
    model = make("hybrid", dtype=torch.float32)
    seqlab.models.save(model, tmp_path / "m")
    back = seqlab.models.load(tmp_path / "m")
    assert isinstance(back, HAT) and back.cfg == model.cfg
    tokens = batch(20)
    with torch.no_grad():
        torch.testing.assert_close(back(tokens)[0], model(tokens)[0], atol=0, rtol=0)


TINY_HAT = {"kind": "hat", "max_word": 8, "encoder_dim": 16,
            "encoder_layers": "attention(heads=2)", "dim": 32,
            "layers": ["attention(heads=2)", "mamba(d_state=4)"], "decoder_dim": 16,
            "decoder_layers": "attention(heads=2)", "mlp_hidden": 32}


def test_run_config_builds_and_trains(small_corpus, tmp_path):
    from seqlab.train.trainer import Trainer
    from tests.train.conftest import tiny_run

    run = tiny_run(small_corpus, tmp_path / "run", TINY_HAT, steps=3, eval_every=3)
    assert isinstance(run.model, HATConfig) and run.kind == "hat"
    result = Trainer(run, progress=False).fit()
    assert len(result.losses) == 3 and all(0 < x < 7 for x in result.losses)
    from seqlab.train.checkpoint import latest_checkpoint

    saved = seqlab.models.load(latest_checkpoint(tmp_path / "run"))
    assert isinstance(saved, HAT) and saved.cfg.max_word == 8


def test_cli_trains_resumes_lists_and_generates(tmp_path, small_corpus, capsys):
    from seqlab.cli import main

    out = tmp_path / "run"
    argv = ["train", "--quiet", "--model", "hat", "--data", str(small_corpus), "--dim", "32",
            "--mixers", "attention(heads=2)", "--layers", "2", "--batch-size", "2",
            "--seq-len", "32", "--out", str(out), "--set", "train.eval_tokens=256",
            "--set", "model.encoder_dim=16", "--set", "model.decoder_dim=16",
            "--set", "model.encoder_layers=attention(heads=2)",
            "--set", "model.decoder_layers=attention(heads=2)"]
    assert main(argv + ["--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "family     : hat" in info
    assert "encoder dim 16, 1 layers, backbone dim 32, 2 layers, decoder dim 16, 1 layers" in info
    assert main(argv + ["--steps", "3", "--resume"]) == 0
    assert "step 3:" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "6",
                 "--strategy", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("def f(")


PROMPTS = [list(b"for x in xs:\n    for y in"), list(b"if a == b:")]


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
    model = make("hybrid", dtype=torch.float32)
    want = [manual_greedy(model, p, 12) for p in PROMPTS]
    kw = {}
    if strategy == "speculative":  # a draft of another kind: a plain LM on the same bytes
        torch.manual_seed(9)
        kw = {"draft": seqlab.models.build_lm(vocab_size=256, dim=16,
                                              layers="attention(heads=2)").eval(),
              "temperature": 0}
    assert generate(model, PROMPTS, strategy, 12, **kw, **options).tokens == want


def test_sampling_is_seeded():
    model = make(dtype=torch.float32)
    a = generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a == generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=3).tokens
    assert a != generate(model, PROMPTS, "sample", 10, temperature=1.0, seed=4).tokens
    draft = seqlab.models.build_lm(vocab_size=256, dim=16, layers="attention(heads=2)").eval()
    out = generate(model, PROMPTS, "speculative", 10, draft=draft, temperature=1.0, seed=3)
    assert [len(t) for t in out.tokens] == [10, 10]


def test_bad_options_are_named():
    with pytest.raises(seqlab.config.ConfigError, match="vocab_size = 4096.*bytes"):
        HATConfig(vocab_size=4096)
    with pytest.raises(seqlab.config.ConfigError, match="max_word"):
        HATConfig(max_word=0)
    with pytest.raises(seqlab.config.ConfigError, match="decoder_layers"):
        HATConfig(decoder_layers="nosuchmixer")
    with pytest.raises(seqlab.config.ConfigError, match="model.kind = 'hats'"):
        seqlab.models.kinds.config_from_dict({"kind": "hats"})
    with pytest.raises(seqlab.state.StateError, match="HATState"):
        make()(batch(4), seqlab.models.build_lm(vocab_size=256, dim=16).init_state(3))

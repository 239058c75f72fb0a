"""The encoder-decoder: both faces equal in float64 at batch > 1 with ragged sources, the
encoder bidirectional and blind to padding, the target causal, the state contract (select,
cat of ragged sources, rewind past the source), every decoding strategy lossless on it,
save/load, and bad options named."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.models.encdec import EncDec, EncDecConfig, EncDecState, decode, pad_rows
from seqlab.state import StateError

START, END = 256, 257
CONFIGS = {
    "attention": dict(encoder_layers="attention(heads=2)*2", decoder_layers="attention(heads=2)*2"),
    # recurrent mixers: the encoder by its forward + reversed runs, a decoder state that cannot
    # rewind (snapshots), and cross-attention in every other block only
    "hybrid": dict(encoder_layers="gru+attention(heads=2)",
                   decoder_layers="attention(heads=2)+mamba(d_state=4)+gru", cross_every=2),
}
SOURCES = [b"def f(x):\n    return x + 1\n", b"pass", b"for a in b:\n    print(a, end='')"]
TARGETS = [b"Add one.", b"Do nothing at all", b"Print"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: a second intra-op thread only waits on this shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name="attention", dtype=torch.float64, seed=0) -> EncDec:
    torch.manual_seed(seed)
    model = EncDec(EncDecConfig(dim=32, cross_heads=2, mlp_hidden=48, **CONFIGS[name]))
    model = model.to(dtype).eval()
    with torch.no_grad():  # off the init (zero biases, unit norms), so a swapped part cannot hide
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def sources():
    return pad_rows([list(s) for s in SOURCES])


def teacher_inputs() -> torch.Tensor:
    """Decoder inputs ``[start] + target``, padded after with spaces (ragged targets)."""
    rows, _ = pad_rows([[START, *t] for t in TARGETS], pad=32)
    return rows


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_parallel_equals_steps_and_chunks(name):
    model = make(name)
    src, n = sources()
    assert len(set(n.tolist())) == 3                       # ragged sources, padded
    state = model.condition(src, n)
    tokens = teacher_inputs()
    full, s_full = model(tokens, state)
    s, steps = state, []
    for t in range(tokens.shape[1]):
        logits, s = model.step(tokens[:, t], s)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)
    head, s_head = model(tokens[:, :5], state)
    tail, _ = model(tokens[:, 5:], s_head)
    torch.testing.assert_close(torch.cat([head, tail], 1), full, atol=1e-10, rtol=1e-10)
    # the stepped state and the parallel one continue alike
    more = torch.tensor([list(b" x"), list(b"y."), list(b"zz")])
    torch.testing.assert_close(model(more, s)[0], model(more, s_full)[0], atol=1e-10, rtol=1e-10)
    last, _ = model(tokens, state, last_only=True)
    torch.testing.assert_close(last, full[:, -1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_encoder_is_bidirectional_and_blind_to_padding(name):
    model = make(name)
    src, n = sources()
    first = torch.full((3, 1), START)
    base, _ = model(first, model.condition(src, n))
    # the source's last byte reaches the first target logits (and its first byte does too)
    for pos in (0, -1):
        changed = src.clone()
        for b in range(3):
            changed[b, pos % int(n[b]) if pos < 0 else 0] = ord("#")
        out, _ = model(first, model.condition(changed, n))
        assert (out - base).abs().amax(-1).min() > 1e-6
    # padding after a row's length: other values, or the row alone, change nothing
    noisy = src.clone()
    pad = torch.arange(src.shape[1])[None] >= n[:, None]
    noisy[pad] = torch.randint(0, 256, (int(pad.sum()),))
    out, _ = model(first, model.condition(noisy, n))
    torch.testing.assert_close(out, base, atol=1e-12, rtol=0)
    for b in range(3):
        alone, _ = model(first[b:b + 1], model.condition(src[b:b + 1, :n[b]]))
        torch.testing.assert_close(alone, base[b:b + 1], atol=1e-12, rtol=0)


@torch.no_grad()
def test_target_is_causal():
    model = make("hybrid")
    state = model.condition(*sources())
    tokens = teacher_inputs()
    base, _ = model(tokens, state)
    T = tokens.shape[1]
    for p in (0, 3, 8):
        changed = tokens.clone()
        changed[:, p + 1:] = torch.tensor(list(b"q.")).repeat(T)[:T - p - 1]
        out, _ = model(changed, state)
        torch.testing.assert_close(out[:, :p + 1], base[:, :p + 1], atol=0, rtol=0)
        assert not torch.allclose(out[:, p + 1:], base[:, p + 1:])


@torch.no_grad()
def test_empty_source_is_init_state():
    model = make()
    tokens = torch.tensor([[START, 65, 66]] * 2)
    a, _ = model(tokens)                                          # state None: init_state
    b, _ = model(tokens, model.condition(torch.zeros(2, 0, dtype=torch.long)))
    c, _ = model(tokens, model.condition(torch.zeros(2, 4, dtype=torch.long), [0, 0]))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-12, rtol=0)
    assert model.init_state(2).offset == (0, 0)


@torch.no_grad()
def test_state_select_cat_and_truncate():
    model = make()
    src, n = sources()
    batch = model.condition(src, n)
    assert batch.offset == tuple(n.tolist())
    rows = [model.condition(src[b:b + 1, :n[b]]) for b in range(3)]
    joined = EncDecState.cat(rows)                  # memories of other lengths, padded
    assert joined.memory.valid.shape == batch.memory.valid.shape
    tokens = teacher_inputs()
    torch.testing.assert_close(model(tokens, joined)[0], model(tokens, batch)[0],
                               atol=1e-12, rtol=0)
    picked = batch.select([2, 2, 0])
    assert picked.offset == (int(n[2]), int(n[2]), int(n[0]))
    torch.testing.assert_close(model(tokens[[2, 2, 0]], picked)[0],
                               model(tokens, batch)[0][[2, 2, 0]], atol=1e-12, rtol=0)
    assert batch.clone().nbytes() == batch.nbytes() > 0
    # a rewind counts the source, as the engine's lengths do
    _, after = model(tokens, batch)
    back = after.truncate([int(k) + 3 for k in n])
    want, _ = model(tokens[:, :3], batch)
    torch.testing.assert_close(model(tokens[:, 3:], back)[0], model(tokens, batch)[0][:, 3:],
                               atol=1e-12, rtol=0)
    assert want.shape[1] == 3
    with pytest.raises(StateError, match="source counts"):
        after.truncate([0, 0, 0])
    with pytest.raises(StateError, match="cannot rewind"):
        make("hybrid").condition(src, n).truncate(list(n.tolist()))


def manual_greedy(model, n_new):
    """Row by row: condition, feed the start id, argmax, feed it back."""
    out = []
    with torch.no_grad():
        for s in SOURCES:
            state = model.condition(torch.tensor([list(s)]))
            token, row = torch.tensor([START]), []
            while len(row) < n_new and (not row or row[-1] != END):
                logits, state = model.step(token, state)
                token = logits.argmax(-1)
                row.append(int(token))
            out.append(row)
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("strategy, options", [
    ("greedy", {}), ("beam", {"num_beams": 1}), ("speculative", {"gamma": 3}),
    ("prompt-lookup", {}), ("ngram", {}),
])
def test_strategies_are_lossless(name, strategy, options):
    model = make(name, dtype=torch.float32, seed=3)
    want = manual_greedy(model, 12)
    kw = {}
    if strategy == "speculative":  # a draft of another kind: a plain LM on the same ids
        torch.manual_seed(9)
        kw = {"draft": seqlab.models.build_lm(vocab_size=258, dim=16,
                                              layers="attention(heads=2)").eval()}
    out = decode(model, *sources(), strategy, 12, **kw, **options)
    assert out.tokens == want


def test_engine_call_by_hand_and_beam_rows_independent():
    """decode is generate with cached rows; beam search over the batch equals each row alone."""
    model = make(dtype=torch.float32, seed=4)
    src, n = sources()
    state = model.condition(src, n)
    rows = [list(s) + [START] for s in SOURCES]
    out = generate(model, rows, "greedy", 10, eos_id=END,
                   cached=[(len(r) - 1, state.select([b])) for b, r in enumerate(rows)])
    assert out.tokens == decode(model, src, n, "greedy", 10).tokens
    # What the CLI and server check before reading prompts as sources (never probed).
    assert model.capabilities.source and model.end_id == END
    beams = decode(model, src, n, "beam", 10, num_beams=3)
    for b in range(3):
        alone = decode(model, src[b:b + 1, :n[b]], None, "beam", 10, num_beams=3)
        assert alone.tokens[0] == beams.tokens[b]
        assert len(beams.tokens[b]) == 10 or beams.tokens[b][-1] == END


def test_sampling_is_seeded():
    model = make(dtype=torch.float32)
    a = decode(model, *sources(), "sample", 10, temperature=1.0, seed=3).tokens
    assert a == decode(model, *sources(), "sample", 10, temperature=1.0, seed=3).tokens
    assert a != decode(model, *sources(), "sample", 10, temperature=1.0, seed=4).tokens


def test_save_load_roundtrip(tmp_path):
    model = make("hybrid", dtype=torch.float32)
    seqlab.models.save(model, tmp_path / "m")
    back = seqlab.models.load(tmp_path / "m")
    assert isinstance(back, EncDec) and back.cfg == model.cfg
    assert seqlab.models.kinds.kind_of(back) == "encdec"
    src, n = sources()
    tokens = teacher_inputs()
    with torch.no_grad():
        torch.testing.assert_close(back(tokens, back.condition(src, n))[0],
                                   model(tokens, model.condition(src, n))[0], atol=0, rtol=0)


def test_parameters_and_state_bytes():
    model = make(dtype=torch.float32)
    unique = {id(p): p for p in model.parameters()}
    assert model.num_parameters() == sum(p.numel() for p in unique.values())
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - 258 * 32
    state = model.condition(torch.randint(0, 256, (1, 40)))
    _, state = model(torch.full((1, 40), START), state)
    assert state.nbytes() == model.state_bytes(40)


def test_bad_options_and_states_are_named():
    with pytest.raises(ConfigError, match="EncDecConfig.end_id = 256"):
        EncDecConfig(end_id=256)
    with pytest.raises(ConfigError, match=r"EncDecConfig.start_id = 300 .*\[0, vocab_size = 258\)"):
        EncDecConfig(start_id=300)
    with pytest.raises(ConfigError, match="EncDecConfig.cross_every = 4"):
        EncDecConfig(decoder_layers="attention*3", cross_every=4)
    with pytest.raises(ConfigError, match="EncDecConfig.decoder_layers"):
        EncDecConfig(decoder_layers="nosuchmixer")
    with pytest.raises(ConfigError, match=r"EncDecConfig.encoder_layers\[0\]"):
        EncDec(EncDecConfig(dim=30, encoder_layers="attention(heads=4)", cross_heads=2))
    model = make()
    src, n = sources()
    with pytest.raises(ValueError, match=r"one source length in \[0, 32\]"):
        model.condition(src, [3, 4, 40])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.condition(src + 300)
    state = model.condition(src, n)
    with pytest.raises(StateError, match=r"state.select"):
        model.step(torch.tensor([START]), state)
    with pytest.raises(StateError, match="EncDecState"):
        model(teacher_inputs(), seqlab.models.build_lm(vocab_size=258, dim=16).init_state(3))

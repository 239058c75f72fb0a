"""quantize_lm: quantized models keep the two faces equal, stay near the float model, and
decode losslessly with every strategy."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.decoding import generate
from seqlab.models.quantize import fuse_projections, quantize_lm, target_format, weight_bytes
from seqlab.nn.quant import QuantEmbedding, QuantLinear


def float_model(layers=("attention", "attention"), dim=64, seed=0, **kw):
    torch.manual_seed(seed)
    m = seqlab.models.build_lm(vocab_size=64, dim=dim, layers=list(layers),
                               mixer_options={n: seqlab.mixers.get(n).example_options for n in set(layers)},
                               **kw)
    with torch.no_grad():
        m.embed.weight.mul_(40)  # peaked distributions: greedy paths far from ties
    return m.eval()


def quantized(weights="q8", activations="int8", **kw):
    return quantize_lm(float_model(**kw), weights, activations)


@pytest.mark.parametrize("weights", ["q8", "q4"])
def test_layers_are_replaced_fused_and_tied(weights):
    m = quantized(weights)
    attn, mlp = m.blocks[0].mixer, m.blocks[0].mlp
    assert isinstance(attn.qkv_proj, QuantLinear) and not hasattr(attn, "q_proj")
    assert isinstance(mlp.gate_up_proj, QuantLinear) and not hasattr(mlp, "gate_proj")
    assert attn.qkv_proj.fmt == ("q8_0" if weights == "q8" else "q4_1")
    assert isinstance(m.embed, QuantEmbedding) and m.embed.fmt == "q8_0"
    assert m.head.blocks.data_ptr() == m.embed.blocks.data_ptr()
    assert m.num_parameters() == float_model().num_parameters()
    assert weight_bytes(m) < weight_bytes(float_model()) / 3


@pytest.mark.parametrize("layers", [("attention", "attention"), ("attention", "mamba", "gru")],
                         ids=["attention", "hybrid"])
@pytest.mark.parametrize("weights", ["q8", "q4"])
@pytest.mark.parametrize("activations", ["int8", "float"])
def test_two_faces_agree_and_stay_near_float(layers, weights, activations):
    """The step face (C++ attention step, integer kernel) equals the parallel face (matmul)
    to float32 rounding, which int8 activations amplify where a value sits at a rounding
    edge; both stay within the formats' error of the float model."""
    ref = float_model(layers)
    m = quantized(weights, activations, layers=layers)
    tokens = torch.randint(0, 64, (3, 20))
    with torch.no_grad():
        full, _ = m(tokens)
        logits, state = m(tokens[:, :2])
        steps = [logits[:, 0], logits[:, 1]]
        for t in range(2, 20):
            out, state = m.step(tokens[:, t], state)
            steps.append(out)
        stepped = torch.stack(steps, 1)
        exact, _ = ref(tokens)
    scale = full.abs().max()
    assert (stepped - full).abs().max() <= (1e-6 if activations == "float" else 2e-3) * scale
    err = (full - exact).abs().max() / exact.abs().max()
    assert err < (0.03 if weights == "q8" else 0.2), err


def test_fusing_changes_nothing():
    m = quantize_lm(float_model(), "q4")
    unfused = float_model()
    for b_f, b_u in zip(m.blocks, unfused.blocks):  # the same blocks, before fusing
        q = b_f.mixer.qkv_proj
        sizes = [b_u.mixer.q_proj.out_features, b_u.mixer.k_proj.out_features,
                 b_u.mixer.v_proj.out_features]
        parts = q.blocks.split([n // 8 for n in sizes])  # packed rows: groups of 8
        for name, n, part in zip(["q_proj", "k_proj", "v_proj"], sizes, parts):
            setattr(b_u.mixer, name, QuantLinear(part.clone(), q.fmt, n, q.in_features))
        g = b_f.mlp.gate_up_proj
        gate, up = g.blocks.chunk(2)
        b_u.mlp.gate_proj, b_u.mlp.up_proj = (QuantLinear(t.clone(), g.fmt, g.out_features // 2,
                                                          g.in_features) for t in (gate, up))
        b_u.mlp.down_proj = b_f.mlp.down_proj
        b_u.mixer.o_proj = b_f.mixer.o_proj
    unfused.embed, unfused.head = m.embed, m.head
    tokens = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        a, sa = m(tokens)
        b, sb = unfused(tokens)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(m.step(tokens[:, 0], sa)[0], unfused.step(tokens[:, 0], sb)[0],
                                   rtol=1e-6, atol=1e-6)
    assert fuse_projections(unfused).blocks[0].mixer.qkv_proj is not None


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3], [7, 8, 9, 7, 8]]


@pytest.mark.parametrize("strategy, options", [
    ("speculative", {"gamma": 3}), ("tree", {}), ("prompt-lookup", {}), ("ngram", {}),
    ("beam", {"num_beams": 1}),
])
def test_strategies_equal_greedy_on_quantized_models(strategy, options):
    """Every strategy runs on the quantized fast path and is lossless there: ragged batch,
    a quantized draft of another size for the drafting strategies."""
    m = quantized("q4")
    greedy = generate(m, PROMPTS, "greedy", 16).tokens
    draft = quantized("q8", dim=32, seed=3) if strategy in ("speculative", "tree") else None
    kw = {"draft": draft, "temperature": 0} if draft is not None else {}
    out = generate(m, PROMPTS, strategy, 16, **kw, **options)
    assert out.tokens == greedy


def test_sampling_is_seeded_on_quantized_models():
    m = quantized("q4")
    a = generate(m, PROMPTS, "sample", 12, temperature=1.0, seed=5).tokens
    assert a == generate(m, PROMPTS, "sample", 12, temperature=1.0, seed=5).tokens


def test_policy():
    assert target_format("q4", "linear", "Q4_0") == "q4_0"
    assert target_format("q4", "linear", "Q6_K") == "q8_0"   # 6-bit weights keep their bits
    assert target_format("q4", "linear", "Q4_K") == "q4_1"
    assert target_format("q4", "embedding", "F32") == "q8_0"
    assert target_format("q8", "linear", "Q4_1") == "q8_0"
    assert target_format("float", "linear", "Q4_1") is None
    with pytest.raises(ValueError, match="choose one of float, q8, q4"):
        quantize_lm(float_model(), "int3")

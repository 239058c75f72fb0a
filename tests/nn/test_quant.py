"""QuantLinear and QuantEmbedding against nn.Linear / nn.Embedding over the dequantized weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.nn.quant import QuantEmbedding, QuantLinear
from seqlab.ops import decode_cpu


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1"])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_float_layer(fmt, bias):
    torch.manual_seed(0)
    lin = nn.Linear(64, 40, bias=bias)
    exact = QuantLinear.from_linear(lin, fmt, activations="float")
    fast = QuantLinear.from_linear(lin, fmt)
    w = exact.dequantized()
    x = torch.randn(2, 5, 64)
    ref = F.linear(x, w, lin.bias)
    torch.testing.assert_close(exact(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(exact(x[:, 0]), ref[:, 0], rtol=1e-5, atol=1e-5)
    rounded = F.linear(decode_cpu.quantize_activations(x.reshape(-1, 64)).view_as(x), w, lin.bias)
    torch.testing.assert_close(fast(x), rounded, rtol=1e-5, atol=1e-5)          # a prompt
    torch.testing.assert_close(fast(x[:, 0]), rounded[:, 0], rtol=1e-5, atol=1e-5)  # a step
    assert fast(x.bfloat16()).dtype == torch.bfloat16
    assert fast.num_weights == 64 * 40


def test_linear_gradient_reaches_the_input_only():
    lin = nn.Linear(32, 8, bias=False)
    q = QuantLinear.from_linear(lin, "q8_0", activations="float")
    x = torch.randn(3, 32, requires_grad=True)
    q(x).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, q.dequantized()).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in q.parameters())


def test_embedding_rows_and_tied_head():
    torch.manual_seed(0)
    table = torch.randn(50, 64)
    blocks = decode_cpu.quantize(table, "q8_0")
    emb = QuantEmbedding(blocks, "q8_0", 50, 64)
    ids = torch.tensor([[3, 49], [0, 3]])
    w = decode_cpu.dequantize(blocks, "q8_0", 50)
    torch.testing.assert_close(emb(ids), F.embedding(ids, w), rtol=0, atol=0)
    head = emb.as_head(activations="float")
    assert head.blocks.data_ptr() == emb.blocks.data_ptr()   # shared, not copied
    h = torch.randn(2, 64)
    torch.testing.assert_close(head(h), h @ w.T, rtol=1e-5, atol=1e-5)


def test_bad_blocks_are_named():
    with pytest.raises(ValueError, match=r"do not hold a \(4, 64\) weight"):
        QuantLinear(torch.zeros(1, 10, dtype=torch.uint8), "q8_0", 4, 64)
    with pytest.raises(ValueError, match="unknown block format"):
        QuantLinear(torch.zeros(1, 544, dtype=torch.uint8), "q3", 4, 64)
    with pytest.raises(ValueError, match="activations='int4'"):
        QuantLinear(torch.zeros(1, 544, dtype=torch.uint8), "q8_0", 4, 64, activations="int4")

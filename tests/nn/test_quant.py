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
    q = QuantLinear.from_linear(lin, fmt)
    w = q.dequantized()
    x = torch.randn(2, 5, 64)
    ref = F.linear(x, w, lin.bias)
    torch.testing.assert_close(q(x), ref, rtol=1e-5, atol=1e-5)       # prompt-sized
    torch.testing.assert_close(q(x[:, 0]), ref[:, 0], rtol=1e-5, atol=1e-5)  # a decode step
    assert q(x.bfloat16()).dtype == torch.bfloat16
    assert q.num_weights == 64 * 40


def test_linear_gradient_reaches_the_input_only():
    lin = nn.Linear(32, 8, bias=False)
    q = QuantLinear.from_linear(lin, "q8_0")
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
    emb = QuantEmbedding(blocks, "q8_0", 64)
    ids = torch.tensor([[3, 49], [0, 3]])
    torch.testing.assert_close(emb(ids), F.embedding(ids, decode_cpu.dequantize(blocks, "q8_0")),
                               rtol=0, atol=0)
    head = emb.as_head()
    assert head.blocks.data_ptr() == emb.blocks.data_ptr()   # shared, not copied
    h = torch.randn(2, 64)
    torch.testing.assert_close(head(h), h @ decode_cpu.dequantize(blocks, "q8_0").T, rtol=1e-5, atol=1e-5)


def test_bad_blocks_are_named():
    with pytest.raises(ValueError, match="do not hold a weight with 64 inputs"):
        QuantLinear(torch.zeros(4, 10, dtype=torch.uint8), "q8_0", 64)
    with pytest.raises(ValueError, match="unknown block format"):
        QuantLinear(torch.zeros(4, 68, dtype=torch.uint8), "q3", 64)

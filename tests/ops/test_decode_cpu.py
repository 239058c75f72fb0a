"""The C++ decode kernels against plain torch: block formats, products, the attention step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.mixers.attention import Attention, AttentionConfig
from seqlab.ops import decode_cpu

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_dequantize_equals_gguf_reference(fmt):
    """Blocks written by gguf-py's quantizer decode to exactly gguf-py's dequantized values."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((48, 160)) * rng.uniform(0.01, 3, (48, 1))).astype(np.float32)
    raw = gguf.quants.quantize(w, QT[fmt.upper()])
    ref = gguf.quants.dequantize(raw, QT[fmt.upper()]).reshape(48, 160)
    blocks = torch.from_numpy(raw.view(np.uint8).reshape(48, -1).copy())
    assert blocks.shape[1] == 160 // 32 * decode_cpu.BLOCK_BYTES[fmt]
    np.testing.assert_array_equal(decode_cpu.dequantize(blocks, fmt).numpy(), ref)
    rows = torch.tensor([5, 0, 47, 5])
    np.testing.assert_array_equal(decode_cpu.dequantize(blocks, fmt, rows).numpy(), ref[[5, 0, 47, 5]])


def test_dequantize_rows_out_of_range():
    blocks = decode_cpu.quantize(torch.randn(4, 32), "q8_0")
    with pytest.raises(RuntimeError, match="outside"):
        decode_cpu.dequantize(blocks, "q8_0", torch.tensor([4]))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1"])
def test_quantize_error_within_half_a_step(fmt):
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.rand(64, 1) * 4
    back = decode_cpu.dequantize(decode_cpu.quantize(w, fmt), fmt)
    b, e = w.reshape(64, 3, 32), (back - w).abs().reshape(64, 3, 32)
    step = b.abs().amax(-1) / 127 if fmt == "q8_0" else (b.amax(-1) - b.amin(-1)) / 15
    # half a step, plus the float16 rounding of the scale (and of the minimum for q4_1)
    bound = step / 2 * (1 + 2e-3) + (b.abs().amax(-1) * 2e-3 if fmt == "q4_1" else 0)
    assert (e <= bound[..., None] + 1e-7).all()
    assert e.max() > 0  # it is lossy: the check above is not vacuous


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 16, 17, 40])
def test_linear_equals_matmul_with_dequantized_weight(fmt, rows):
    """Both paths (row kernel up to ROW_KERNEL_MAX rows, dequantize + matmul above), N not a
    multiple of the kernel's 4-row groups."""
    torch.manual_seed(rows)
    w = torch.randn(203, 96)
    raw = gguf.quants.quantize(w.numpy(), QT[fmt.upper()])
    blocks = torch.from_numpy(raw.view(np.uint8).reshape(203, -1).copy())
    x = torch.randn(rows, 96)
    ref = x.double() @ decode_cpu.dequantize(blocks, fmt).double().T
    y = decode_cpu.linear(x, blocks, fmt)
    assert y.shape == (rows, 203) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)


def test_linear_small_outputs_and_threads():
    w = torch.randn(3, 64)
    blocks = decode_cpu.quantize(w, "q8_0")
    x = torch.randn(2, 64)
    torch.testing.assert_close(decode_cpu.linear(x, blocks, "q8_0"),
                               x @ decode_cpu.dequantize(blocks, "q8_0").T, rtol=1e-5, atol=1e-5)


def test_linear_rejects_bad_shapes():
    blocks = decode_cpu.quantize(torch.randn(8, 64), "q4_1")
    with pytest.raises(RuntimeError, match="inputs"):
        decode_cpu.linear(torch.randn(1, 96), blocks, "q4_1")
    with pytest.raises(ValueError, match="unknown block format"):
        decode_cpu.linear(torch.randn(1, 64), blocks, "q5_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        decode_cpu.quantize(torch.randn(8, 40), "q8_0")


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("rotary", [True, False])
def test_attend_step_equals_torch_attention_step(window, rotary):
    """Ragged rows (lengths 0, 4, 7), grouped heads: the C++ step writes the same cache entries
    and returns the same outputs as the torch step of the same layer."""
    torch.manual_seed(1)
    layer = Attention(64, AttentionConfig(heads=4, kv_heads=2, window=window, rotary=rotary,
                                          rope_theta=500.0)).eval()
    with torch.no_grad():
        prompt = torch.randn(3, 7, 64)
        _, full = layer.mix(prompt, None)
        state = full.truncate([0, 4, 7]).writable(16, contiguous=True)
        x = torch.randn(3, 64)
        y_ref, s_ref = layer.step_unchecked(x, state.clone())  # float layer: the torch step
        q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
        inv = (500.0 ** (-torch.arange(0, 8, dtype=torch.float32) / 8)) if rotary else None
        kc, vc = state.k.clone(), state.v.clone()
        y = decode_cpu.attend_step(torch.cat([q, k, v], -1), kc, vc, torch.tensor([0, 4, 7]), 4, 2,
                                   inv, layer.scale, window)
    torch.testing.assert_close(layer.o_proj(y), y_ref, rtol=1e-5, atol=1e-5)
    for b, n in enumerate([0, 4, 7]):
        torch.testing.assert_close(kc[b, :, n], s_ref.k[b, :, n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vc[b, :, n], s_ref.v[b, :, n], rtol=0, atol=0)


def test_attend_step_refuses_a_full_cache():
    kc = torch.zeros(1, 1, 2, 32)
    with pytest.raises(RuntimeError, match="full"):
        decode_cpu.attend_step(torch.zeros(1, 96), kc, kc.clone(), torch.tensor([2]), 1, 1, None,
                               1.0, None)

"""The C++ decode kernels against plain torch: block formats, products, the attention step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.mixers.attention import Attention, AttentionConfig
from seqlab.ops import decode_cpu

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402


def gguf_blocks(w: np.ndarray, fmt: str) -> tuple[torch.Tensor, np.ndarray]:
    """(native blocks written by gguf-py's quantizer, gguf-py's dequantized values)."""
    raw = gguf.quants.quantize(w, QT[fmt.upper()])
    ref = gguf.quants.dequantize(raw, QT[fmt.upper()]).reshape(w.shape)
    return torch.from_numpy(raw.view(np.uint8).reshape(w.shape[0], -1).copy()), ref


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("rows", [48, 45])  # whole groups of 8, and a padded last group
def test_packed_blocks_decode_to_gguf_values(fmt, rows):
    """Packing moves a file's bytes without changing a value: the packed blocks dequantize
    to exactly gguf-py's values, whole or row by row."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((rows, 160)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
    native, ref = gguf_blocks(w, fmt)
    assert native.shape[1] == 160 // 32 * decode_cpu.BLOCK_BYTES[fmt]
    packed = decode_cpu.pack(native, fmt)
    assert packed.shape == (6, 5 * 8 * decode_cpu.BLOCK_BYTES[fmt])  # the same bytes, padded to 48 rows
    np.testing.assert_array_equal(decode_cpu.dequantize(packed, fmt, rows).numpy(), ref)
    pick = torch.tensor([5, 0, rows - 1, 5])
    np.testing.assert_array_equal(decode_cpu.dequantize(packed, fmt, rows, pick).numpy(), ref[pick.numpy()])


def test_dequantize_rows_out_of_range():
    blocks = decode_cpu.quantize(torch.randn(4, 32), "q8_0")
    with pytest.raises(RuntimeError, match="outside"):
        decode_cpu.dequantize(blocks, "q8_0", 4, torch.tensor([4]))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1"])
def test_quantize_error_within_half_a_step(fmt):
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.rand(64, 1) * 4
    back = decode_cpu.dequantize(decode_cpu.quantize(w, fmt), fmt, 64)
    b, e = w.reshape(64, 3, 32), (back - w).abs().reshape(64, 3, 32)
    step = b.abs().amax(-1) / 127 if fmt == "q8_0" else (b.amax(-1) - b.amin(-1)) / 15
    # half a step, plus the float16 rounding of the scale (and of the minimum for q4_1)
    bound = step / 2 * (1 + 2e-3) + (b.abs().amax(-1) * 2e-3 if fmt == "q4_1" else 0)
    assert (e <= bound[..., None] + 1e-7).all()
    assert e.max() > 0  # it is lossy: the check above is not vacuous


def test_activation_rounding():
    """int8 activations: each 32-block becomes d * q with d = max|x| / 127, q rounded to nearest."""
    torch.manual_seed(0)
    x = torch.randn(3, 64) * torch.tensor([1.0, 1e-3, 50.0])[:, None]
    x[1, 32:] = 0  # an all-zero block stays zero
    d = x.reshape(3, 2, 32).abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, 0)  # times the reciprocal, as the kernel rounds x / d
    ref = ((x.reshape(3, 2, 32) * inv).round() * d).reshape(3, 64)
    torch.testing.assert_close(decode_cpu.quantize_activations(x), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 16, 17, 40, 64, 65, 150])
def test_linear_equals_matmul_with_dequantized_weight(fmt, rows):
    """int8: the integer kernel (up to ROW_KERNEL_MAX rows) and the matmul path above it both
    compute quantize_activations(x) @ W.T; float: x @ W.T. N = 203 pads the last group."""
    torch.manual_seed(rows)
    native, _ = gguf_blocks(torch.randn(203, 96).numpy(), fmt)
    blocks = decode_cpu.pack(native, fmt)
    w = decode_cpu.dequantize(blocks, fmt, 203).double()
    x = torch.randn(rows, 96)
    y = decode_cpu.linear(x, blocks, fmt, 203)
    assert y.shape == (rows, 203) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), decode_cpu.quantize_activations(x).double() @ w.T,
                               rtol=1e-5, atol=1e-5)
    exact = decode_cpu.linear(x, blocks, fmt, 203, activations="float")
    torch.testing.assert_close(exact.double(), x.double() @ w.T, rtol=1e-5, atol=1e-5)
    assert (y - exact).abs().max() > 0  # the two modes differ: int8 rounding is real


def test_linear_rejects_bad_shapes():
    blocks = decode_cpu.quantize(torch.randn(8, 64), "q4_1")
    with pytest.raises(RuntimeError, match="do not hold"):
        decode_cpu.linear(torch.randn(1, 64), blocks, "q4_1", 16)
    with pytest.raises(ValueError, match="unknown block format"):
        decode_cpu.linear(torch.randn(1, 64), blocks, "q5_0", 8)
    with pytest.raises(ValueError, match="activations='int4' is not known"):
        decode_cpu.linear(torch.randn(1, 64), blocks, "q4_1", 8, activations="int4")
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

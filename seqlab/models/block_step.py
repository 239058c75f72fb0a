"""The decode step of a quantized Llama block in one C++ call.

A block of ``seqlab.models.lm.Block`` whose mixer is attention with fused, quantized
q/k/v and output projections, whose MLP is a SwiGLU with fused, quantized gate/up and
down projections, and whose norms are float32 RMSNorms, steps through
``seqlab.ops.decode_cpu.block_step``: norm, projections, rotary, cache write,
attention, residuals and MLP in one call. The torch path of the same block does the
same arithmetic in about forty operations and eight module calls; for SmolLM2's 30
layers that overhead was larger than the matrix products (see docs/benchmarks.md).
Chunks after a cache (a speculative verification, a session's next prompt) take the same
call with T tokens per row. A prompt without a cache (fused SDPA is the faster attention
there), trees (their masks), and anything that needs gradients keep the torch path;
tests compare the two (tests/models/test_quantize.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.mixers.attention import Attention, KVCache
from seqlab.nn.mlp import GatedMLP
from seqlab.nn.norm import RMSNorm
from seqlab.nn.quant import QuantLinear
from seqlab.ops import decode_cpu


def eligible(block) -> bool:
    """Whether ``block`` has the layout ``block_step`` computes."""
    attn, mlp = block.mixer, block.mlp

    def quant(m):
        return isinstance(m, QuantLinear) and m.bias is None

    # Gemma's layout (q/k norms, post norms, GeGLU) is not what the C++ block computes.
    return (isinstance(attn, Attention) and quant(attn.qkv_proj) and quant(attn.o_proj)
            and not attn.cfg.qk_norm and block.mixer_post_norm is None
            and isinstance(mlp, GatedMLP) and mlp.activation == "silu"
            and quant(mlp.gate_up_proj) and quant(mlp.down_proj)
            and isinstance(block.mixer_norm, RMSNorm) and isinstance(block.mlp_norm, RMSNorm)
            and block.mixer_norm.eps == block.mlp_norm.eps
            and block.mixer_norm.weight.dtype == block.mlp_norm.weight.dtype == torch.float32
            and len({attn.qkv_proj.activations, attn.o_proj.activations,
                     mlp.gate_up_proj.activations, mlp.down_proj.activations}) == 1)


def block_step(block, x: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
    """``block.step(x, state)`` for x (B, D), or ``block(x, state)`` for a chunk x (B, T, D)
    after a cache, in one C++ call (``eligible(block)`` must hold)."""
    attn, mlp = block.mixer, block.mlp
    qkv, o, gu, down = attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj
    tokens = x.shape[1] if x.dim() == 3 else 1
    cache = attn.cache_for_step(state, tokens)
    inv = attn.inv_freq()
    y = decode_cpu.load().block_step(
        x.reshape(-1, x.shape[-1]).float().contiguous(), block.mixer_norm.weight, block.mlp_norm.weight, block.mixer_norm.eps,
        qkv.blocks, decode_cpu.code(qkv.fmt), qkv.out_features, o.blocks, decode_cpu.code(o.fmt),
        gu.blocks, decode_cpu.code(gu.fmt), gu.out_features, down.blocks, decode_cpu.code(down.fmt),
        cache.k, cache.v, torch.tensor(cache.lengths), attn.heads, attn.kv_heads,
        torch.empty(0) if inv is None else inv, attn.scale, attn.cfg.window or 0,
        qkv.activations == "int8")
    return y.view(x.shape).to(x.dtype), attn.cache_after_step(cache, tokens)

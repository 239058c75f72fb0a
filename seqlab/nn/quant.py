"""Linear and embedding layers whose weights stay block-quantized (Q8_0, Q4_0, Q4_1).

Drop-in replacements for ``nn.Linear`` and ``nn.Embedding`` at inference: the
weight is a uint8 buffer of 32-weight blocks (:mod:`seqlab.ops.decode_cpu`) and
the products run in the C++ kernels on float32 activations. They hold no
trainable weight; gradients flow to the input only (through the dequantized
weight), enough for methods that optimise activations.

Example:
    >>> layer = QuantLinear.from_linear(nn.Linear(576, 1536, bias=False), "q4_1")
    >>> y = layer(torch.randn(2, 576))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.ops import decode_cpu


def check_blocks(blocks: Tensor, fmt: str, in_features: int) -> None:
    """Raise ValueError unless ``blocks`` is a uint8 (N, bytes) matrix of ``in_features`` columns."""
    if fmt not in decode_cpu.BLOCK_BYTES:
        raise ValueError(f"unknown block format {fmt!r}; known: {', '.join(decode_cpu.FORMATS)}")
    want = in_features // decode_cpu.BLOCK * decode_cpu.BLOCK_BYTES[fmt]
    if (in_features % decode_cpu.BLOCK or blocks.dim() != 2 or blocks.shape[1] != want
            or blocks.dtype != torch.uint8):
        raise ValueError(f"{fmt} blocks of shape {tuple(blocks.shape)} and dtype {blocks.dtype} do "
                         f"not hold a weight with {in_features} inputs (expected uint8 (N, {want}))")


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, blocks, fmt):
        ctx.save_for_backward(blocks)
        ctx.fmt = fmt
        return decode_cpu.linear(x, blocks, fmt)

    @staticmethod
    def backward(ctx, gy):
        (blocks,) = ctx.saved_tensors
        return gy @ decode_cpu.dequantize(blocks, ctx.fmt), None, None


class QuantLinear(nn.Module):
    """``y = x Wᵀ + b`` with W (out, in) kept as ``fmt`` blocks.

    Args:
        blocks: uint8 (out_features, in_features / 32 * block bytes).
        fmt: ``"q8_0"``, ``"q4_0"`` or ``"q4_1"``.
        in_features: the input width (a multiple of 32).
        bias: optional float (out_features,).
    """

    def __init__(self, blocks: Tensor, fmt: str, in_features: int, bias: Tensor | None = None):
        super().__init__()
        check_blocks(blocks, fmt, in_features)
        self.fmt = fmt
        self.in_features = in_features
        self.out_features = blocks.shape[0]
        self.register_buffer("blocks", blocks.contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str) -> "QuantLinear":
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(decode_cpu.quantize(linear.weight, fmt), fmt, linear.in_features, bias)

    @property
    def num_weights(self) -> int:
        return self.in_features * self.out_features

    def dequantized(self) -> Tensor:
        """The float32 weight (out, in) these blocks stand for."""
        return decode_cpu.dequantize(self.blocks, self.fmt)

    def forward(self, x: Tensor) -> Tensor:
        lead, dtype = x.shape[:-1], x.dtype
        h = x.reshape(-1, self.in_features)
        if h.dtype != torch.float32:
            h = h.float()
        if torch.is_grad_enabled() and h.requires_grad:
            y = _LinearFn.apply(h, self.blocks, self.fmt)
        else:
            y = decode_cpu.linear(h, self.blocks, self.fmt)
        if self.bias is not None:
            y = y + self.bias
        y = y.view(*lead, self.out_features)
        return y if dtype == torch.float32 else y.to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fmt={self.fmt}, bias={self.bias is not None}")


class QuantEmbedding(nn.Module):
    """Embedding rows kept as ``fmt`` blocks; a lookup dequantizes only the rows it reads."""

    def __init__(self, blocks: Tensor, fmt: str, dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        check_blocks(blocks, fmt, dim)
        self.fmt = fmt
        self.embedding_dim = dim
        self.num_embeddings = blocks.shape[0]
        self.dtype = dtype
        self.register_buffer("blocks", blocks.contiguous())

    @property
    def num_weights(self) -> int:
        return self.num_embeddings * self.embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        rows = decode_cpu.dequantize(self.blocks, self.fmt, ids.reshape(-1))
        rows = rows.view(*ids.shape, self.embedding_dim)
        return rows if self.dtype == torch.float32 else rows.to(self.dtype)

    def as_head(self) -> QuantLinear:
        """The tied output head: a QuantLinear over the same blocks (no copy)."""
        return QuantLinear(self.blocks, self.fmt, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, fmt={self.fmt}"

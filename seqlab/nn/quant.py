"""Linear and embedding layers whose weights stay block-quantized (Q8_0, Q4_0, Q4_1).

Drop-in replacements for ``nn.Linear`` and ``nn.Embedding`` at inference: the
weight is a uint8 buffer of packed 32-weight blocks (:mod:`seqlab.ops.decode_cpu`)
and the products run in the C++ kernels. ``activations`` says how: ``"int8"``
rounds each 32-block of the input to int8 first (llama.cpp's scheme, the fast
path), ``"float"`` multiplies the input as it is (the exact reference, slow at one
row). They hold no trainable weight; gradients flow to the input only (through the
dequantized weight), enough for methods that optimise activations.

Example:
    >>> layer = QuantLinear.from_linear(nn.Linear(576, 1536, bias=False), "q4_1")
    >>> y = layer(torch.randn(2, 576))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.ops import decode_cpu


def check_blocks(blocks: Tensor, fmt: str, n: int, k: int) -> None:
    """Raise ValueError unless ``blocks`` are packed ``fmt`` blocks of an (n, k) weight."""
    if fmt not in decode_cpu.BLOCK_BYTES:
        raise ValueError(f"unknown block format {fmt!r}; known: {', '.join(decode_cpu.FORMATS)}")
    g = decode_cpu.GROUP
    want = (-(-n // g), k // decode_cpu.BLOCK * g * decode_cpu.BLOCK_BYTES[fmt])
    if k % decode_cpu.BLOCK or blocks.dtype != torch.uint8 or tuple(blocks.shape) != want:
        raise ValueError(f"{fmt} blocks of shape {tuple(blocks.shape)} and dtype {blocks.dtype} do "
                         f"not hold a ({n}, {k}) weight (expected packed uint8 {want}; see "
                         "seqlab.ops.decode_cpu.pack)")


def check_activations(activations: str) -> str:
    if activations not in decode_cpu.ACTIVATIONS:
        raise ValueError(f"activations={activations!r} is not known; choose one of "
                         f"{', '.join(decode_cpu.ACTIVATIONS)}")
    return activations


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, blocks, fmt, n, activations):
        ctx.save_for_backward(blocks)
        ctx.fmt, ctx.n = fmt, n
        return decode_cpu.linear(x, blocks, fmt, n, activations)

    @staticmethod
    def backward(ctx, gy):
        (blocks,) = ctx.saved_tensors
        return gy @ decode_cpu.dequantize(blocks, ctx.fmt, ctx.n), None, None, None, None


class QuantLinear(nn.Module):
    """``y = x Wᵀ + b`` with W (out, in) kept as packed ``fmt`` blocks.

    Args:
        blocks: packed uint8 blocks (``decode_cpu.pack`` / ``decode_cpu.quantize``).
        fmt: ``"q8_0"``, ``"q4_0"`` or ``"q4_1"``.
        out_features, in_features: the weight's shape (in_features a multiple of 32).
        bias: optional float (out_features,).
        activations: ``"int8"`` (fast) or ``"float"`` (exact); see the module docstring.
    """

    def __init__(self, blocks: Tensor, fmt: str, out_features: int, in_features: int,
                 bias: Tensor | None = None, activations: str = "int8"):
        super().__init__()
        check_blocks(blocks, fmt, out_features, in_features)
        self.fmt = fmt
        self.in_features = in_features
        self.out_features = out_features
        self.activations = check_activations(activations)
        self.register_buffer("blocks", blocks.contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, activations: str = "int8") -> "QuantLinear":
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(decode_cpu.quantize(linear.weight, fmt), fmt, linear.out_features,
                   linear.in_features, bias, activations)

    @property
    def num_weights(self) -> int:
        return self.in_features * self.out_features

    def dequantized(self) -> Tensor:
        """The float32 weight (out, in) these blocks stand for."""
        return decode_cpu.dequantize(self.blocks, self.fmt, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        lead, dtype = x.shape[:-1], x.dtype
        h = x.reshape(-1, self.in_features)
        if h.dtype != torch.float32:
            h = h.float()
        if torch.is_grad_enabled() and h.requires_grad:
            y = _LinearFn.apply(h, self.blocks, self.fmt, self.out_features, self.activations)
        else:
            y = decode_cpu.linear(h, self.blocks, self.fmt, self.out_features, self.activations)
        if self.bias is not None:
            y = y + self.bias
        y = y.view(*lead, self.out_features)
        return y if dtype == torch.float32 else y.to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fmt={self.fmt}, activations={self.activations}, bias={self.bias is not None}")


class QuantEmbedding(nn.Module):
    """Embedding rows kept as packed ``fmt`` blocks; a lookup dequantizes only the rows it reads."""

    def __init__(self, blocks: Tensor, fmt: str, num_embeddings: int, dim: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        check_blocks(blocks, fmt, num_embeddings, dim)
        self.fmt = fmt
        self.embedding_dim = dim
        self.num_embeddings = num_embeddings
        self.dtype = dtype
        self.register_buffer("blocks", blocks.contiguous())

    @property
    def num_weights(self) -> int:
        return self.num_embeddings * self.embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        rows = decode_cpu.dequantize(self.blocks, self.fmt, self.num_embeddings, ids.reshape(-1))
        rows = rows.view(*ids.shape, self.embedding_dim)
        return rows if self.dtype == torch.float32 else rows.to(self.dtype)

    def as_head(self, activations: str = "int8") -> QuantLinear:
        """The tied output head: a QuantLinear over the same blocks (no copy)."""
        return QuantLinear(self.blocks, self.fmt, self.num_embeddings, self.embedding_dim,
                           activations=activations)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, fmt={self.fmt}"

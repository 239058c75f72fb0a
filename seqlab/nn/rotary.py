"""Rotary position embeddings (RoFormer, arXiv:2104.09864), Llama/HF layout.

The head dimension is split in two halves that rotate together
(``rotate_half``), the layout Hugging Face Llama checkpoints use.
Positions are explicit ``(B, T)`` integers so that every batch row can sit
at its own offset (ragged KV caches).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_angles(positions: Tensor, head_dim: int, theta: float = 10000.0,
                  dtype: torch.dtype = torch.float32, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """cos and sin of shape ``(B, 1, T, head_dim)`` for integer ``positions: (B, T)``.

    ``scale`` > 1 interpolates positions linearly (position / scale: "linear" rope scaling,
    as Gemma 3's global layers use).

    Rows that share positions (training, a fresh prompt batch) pass ``(1, T)``: the angles
    are computed once and broadcast over the batch in ``apply_rotary``.
    """
    half = head_dim // 2
    # Angles in fp64 when the activations are fp64, else fp32: large positions
    # times small frequencies lose precision in bf16.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, half, device=positions.device, dtype=work) / half) / scale
    ang = positions.to(work)[..., None] * inv_freq          # (B, T, half)
    ang = torch.cat([ang, ang], dim=-1)[:, None]             # (B, 1, T, head_dim)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x: (B, H, T, Dh)`` by the angles from ``rotary_angles``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin

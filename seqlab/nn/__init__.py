"""Shared building blocks: norms, MLPs, rotary positions."""

from seqlab.nn.mlp import GatedMLP
from seqlab.nn.norm import RMSNorm
from seqlab.nn.rotary import apply_rotary, rotary_angles

__all__ = ["RMSNorm", "GatedMLP", "apply_rotary", "rotary_angles"]

"""Gated MLP: ``down(act(gate(x)) * up(x))``: SwiGLU (Llama, ``act = silu``) or GeGLU
(Gemma, ``act = gelu`` with the tanh approximation)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# The gate's activation by name, as configs spell it.
ACTIVATIONS = {
    "silu": F.silu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = False, activation: str = "silu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not known; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.gate_up_proj: nn.Module | None = None  # gate and up rows in one layer (fuse_gate_up)

    def init_weights(self, std: float, depth: int) -> None:
        """Normal(0, std) inputs; the output shrunk by sqrt(2 depth) for a stack of ``depth``
        blocks (GPT-2's residual scaling), so the residual stream keeps its scale."""
        for lin in (self.gate_proj, self.up_proj):
            nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.down_proj.weight, std=std / (2 * depth) ** 0.5)

    def fuse_gate_up(self, gate_up_proj: nn.Module) -> None:
        """Replace gate_proj and up_proj by one layer whose outputs are theirs side by side."""
        del self.gate_proj, self.up_proj
        self.gate_up_proj = gate_up_proj

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, -1)
            return self.down_proj(self._act(gate) * up)
        return self.down_proj(self._act(self.gate_proj(x)) * self.up_proj(x))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"

"""What the LSTM and GRU mixers share: torch's fused RNN kernel as the
parallel face (cuDNN on GPU, oneDNN/ATen on CPU), an explicit cell with the
same weights as the recurrent face, and an optional output projection."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqlab.config import Config, require


@dataclass(frozen=True)
class RNNConfig(Config):
    hidden: int | None = None    # None: hidden size = dim
    out_proj: bool = True        # a linear map back to dim, as after any mixer

    def validate(self) -> None:
        require(self.hidden is None or self.hidden > 0, self, "hidden", "a positive int or None")


class FusedRNNMixin:
    """Builds ``self.rnn`` (an ``nn.LSTM``/``nn.GRU``) and the output map."""

    def _build(self, dim: int, cfg: RNNConfig, rnn_cls) -> None:
        self.hidden = cfg.hidden or dim
        if not cfg.out_proj and self.hidden != dim:
            raise ValueError(f"out_proj=False needs hidden == dim, got hidden = {self.hidden}, "
                             f"dim = {dim}")
        self.rnn = rnn_cls(dim, self.hidden, batch_first=True)
        self.out = nn.Linear(self.hidden, dim, bias=False) if cfg.out_proj else nn.Identity()

    def _gates(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Input and hidden pre-activations of one step with the fused kernel's weights."""
        r = self.rnn
        gi = nn.functional.linear(x_t, r.weight_ih_l0, r.bias_ih_l0)
        gh = nn.functional.linear(h, r.weight_hh_l0, r.bias_hh_l0)
        return gi, gh

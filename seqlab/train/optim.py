"""The optimizer options, schedule and step that the trainer and the probe sweeps share.

``OptimizerConfig`` is the one definition of AdamW's and the schedule's fields;
``TrainConfig`` (language-model runs) and ``ProbeTrainConfig`` (bench cells)
extend it. ``optimizer_step`` is the one training step both loops take: set the
scheduled learning rate, compute the loss and its gradients, clip, refuse a
non-finite loss or gradient, and step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from seqlab.config import Config, require

if TYPE_CHECKING:
    from seqlab.train.sparsity import Pruner


@dataclass(frozen=True)
class OptimizerConfig(Config):
    """AdamW with linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at ``steps``.

    Attributes:
        steps: optimizer steps in all (the schedule's length).
        lr, min_lr_ratio, warmup: the schedule's peak, floor (a fraction of lr), warm-up steps.
        weight_decay, beta1, beta2: AdamW's (decay only on matrices, see ``make_optimizer``).
        grad_clip: the gradient norm clipped to (0: no clipping).
        precision: "auto" (bfloat16 autocast on CUDA), "float32" or "bfloat16".
        decay_time_scales: decay the matrices mixers name in ``no_weight_decay`` too (mamba's
            ``A_log``), as seqlab did before 2026-11-28. The reference implementations exempt
            them; docs/results.md's passkey recipe learned only with this decay (with the
            exemption, mamba at d_state 16 stays on the 0.1 plateau for 4,000 steps).
    """

    steps: int = 1000
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    decay_time_scales: bool = False

    def validate(self) -> None:
        require(self.steps > 0, self, "steps", "a positive int")
        require(self.warmup >= 0, self, "warmup", "an int >= 0")
        require(math.isfinite(self.lr) and self.lr > 0, self, "lr", "a positive number")
        require(0 <= self.min_lr_ratio <= 1, self, "min_lr_ratio", "a number in [0, 1]")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, self,
                "weight_decay", "a finite number >= 0")
        require(0 <= self.beta1 < 1, self, "beta1", "a number in [0, 1)")
        require(0 <= self.beta2 < 1, self, "beta2", "a number in [0, 1)")
        require(math.isfinite(self.grad_clip) and self.grad_clip >= 0, self, "grad_clip",
                "a finite number >= 0 (0 disables)")


def lr_at(step: int, cfg: OptimizerConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: OptimizerConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices other than the embedding and those a module names
    in its ``no_weight_decay`` (state-space time scales, see ``seqlab.mixers.base.Mixer``)."""
    exempt = set() if cfg.decay_time_scales else {
        id(getattr(m, n)) for m in model.modules() for n in getattr(m, "no_weight_decay", ())}
    seen, decay, no_decay = set(), [], []
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        decayed = p.dim() >= 2 and "embed" not in name and id(p) not in exempt
        (decay if decayed else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, step: int, cfg: OptimizerConfig,
                   backward: Callable[[], float], pruner: Pruner | None = None
                   ) -> tuple[float, str | None]:
    """One training step at schedule position ``step`` (0-based).

    Args:
        backward: computes the loss, calls ``backward()`` on it (micro-batches and
            all-reduce included) and returns its value.
        pruner: sparsity masks (``seqlab.train.sparsity``): the gradients of pruned weights
            are zeroed before clipping, and after the step the masks are updated on schedule
            and applied, so pruned weights stay exactly zero.

    Returns:
        ``(loss, None)`` after an optimizer step, or ``(loss, problem)`` without one when the
        loss or the gradient norm is not finite (the gradients are dropped), where
        ``problem`` says which and at which step.
    """
    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg)
    loss = backward()
    if pruner is not None:
        pruner.mask_gradients()
    gnorm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
             if cfg.grad_clip > 0 else None)
    if not math.isfinite(loss) or (gnorm is not None and not torch.isfinite(gnorm)):
        opt.zero_grad(set_to_none=True)
        what = f"loss is {loss}" if not math.isfinite(loss) else "gradient norm is not finite"
        return loss, f"{what} at step {step + 1}"
    opt.step()
    opt.zero_grad(set_to_none=True)
    if pruner is not None:
        pruner.after_step(step + 1, opt)
    return loss, None

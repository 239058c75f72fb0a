"""Train and evaluate one model on one probe.

This is a compact loop beside :class:`seqlab.train.Trainer`, taking the
trainer's own training step (``seqlab.train.optim.optimizer_step``: schedule,
clipping, the non-finite check) and pieces (``make_optimizer``,
``autocast_dtype``, ``autocast_context``) rather than a second copy of them. The Trainer is built
around a text corpus (tokenizer files in checkpoints, bits-per-byte
evaluation, resume checks against an LM config) and its checkpoints know only
LMs; a sweep cell lasts seconds to minutes, is restarted rather than resumed
(the results file is the unit of resume), and may be a classifier.

Speed: for kind "lm" the vocabulary head runs only at the scored positions.
A probe such as MQAR scores 16 of 256 positions, so with a vocabulary of 8192
this skips ~94% of the largest matmul and never materialises a
``(B, L, V)`` logits tensor (2 GiB at batch 256).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import require
from seqlab.tasks.probes import IGNORE, Probe, ProbeBatch
from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step
from seqlab.train.sparsity import Pruner, SparsityConfig
from seqlab.train.trainer import autocast_context, autocast_dtype


@dataclass(frozen=True)
class ProbeTrainConfig(OptimizerConfig):
    """Optimisation and evaluation options of one sweep cell.

    The optimiser fields are ``seqlab.train.optim.OptimizerConfig``'s, as in
    :class:`seqlab.train.TrainConfig` (AdamW, linear warm-up then cosine decay to
    ``lr * min_lr_ratio``); the sequence length comes from the probe. ``sparsity``
    prunes or masks the mixers' matrices (``seqlab.train.sparsity``; off by default).
    """

    batch_size: int = 64
    eval_batches: int = 16          # test batches scored at each length
    eval_batch_size: int = 64
    # Early stop: every check_every steps score check_batches validation batches and stop once
    # accuracy >= stop_at_accuracy (0 never checks). A cell that has solved its probe need not
    # spend the rest of its budget, which makes wide sweeps affordable on a CPU.
    stop_at_accuracy: float = 0.0
    check_every: int = 50
    check_batches: int = 2
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_batches", "eval_batch_size", "check_every",
                     "check_batches"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        require(0.0 <= self.stop_at_accuracy <= 1.0, self, "stop_at_accuracy",
                "a number in [0, 1] (0 disables the early stop)")
        super().validate()


@dataclass
class FitResult:
    status: Literal["ok", "nan"]
    steps: int                                  # optimizer steps completed
    losses: list[float] = field(default_factory=list)
    train_s: float = 0.0
    message: str = ""
    checks: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)
    reached_at: int | None = None               # step whose check reached stop_at_accuracy
    sparsity: float | None = None               # zeros in the pruned matrices at the end


def scored_logits(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Logits ``(N, vocab)`` at the positions where ``targets != IGNORE``, in row-major order.

    Equal to ``model(inputs)[0][targets != IGNORE]`` without computing the rest.

    Example:
        >>> logits = scored_logits(lm, batch.inputs, batch.targets)
        >>> loss = F.cross_entropy(logits, batch.targets[batch.targets != IGNORE])
    """
    hidden, _ = model.features(inputs)                     # (B, L, D)
    return model.head(hidden[targets != IGNORE])           # (N, V)


def probe_outputs(model: nn.Module, probe: Probe, batch: ProbeBatch) -> Tensor:
    """What ``probe.score`` reads: scored-position logits (kind "lm"), class logits, or
    predicted targets (kind "regress")."""
    if probe.kind == "lm":
        return scored_logits(model, batch.inputs, batch.targets)
    if "lengths" in batch.extra:   # sequences of several lengths, padded at the end (file probe)
        return model(batch.inputs, lengths=batch.extra["lengths"])
    return model(batch.inputs)


def probe_loss(model: nn.Module, probe: Probe, batch: ProbeBatch) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy over the scored positions (or sequences), or for kind "regress"
    the mean squared error of the (B, K) targets; and the outputs."""
    out = probe_outputs(model, probe, batch)
    if probe.kind == "regress":
        return F.mse_loss(out.float(), batch.targets), out
    targets = batch.targets[batch.targets != IGNORE] if probe.kind == "lm" else batch.targets
    return F.cross_entropy(out.float(), targets), out


def fit_probe(model: nn.Module, probe: Probe, cfg: ProbeTrainConfig, *, seed: int = 0,
              device: torch.device | str = "cpu",
              on_step: Callable[[int, float], bool | None] | None = None) -> FitResult:
    """Train ``model`` (already on ``device``) on ``probe``'s train split for ``cfg.steps`` steps.

    Batch ``s`` is ``probe.batch("train", s, cfg.batch_size, seed)``, so two runs
    with the same seed see the same data. A loss or gradient norm that is not
    finite stops training with status "nan" (the sweep records it and moves on).

    With ``cfg.stop_at_accuracy > 0`` the validation split (a stream disjoint from
    train and test) is scored every ``cfg.check_every`` steps, and training stops at
    the first check that reaches it; ``checks`` keeps the learning curve. With
    ``cfg.sparsity`` on, it never stops before the masks reach their final sparsity.

    Args:
        on_step: called after each optimizer step with (steps done, loss); returning True
            stops training there (status "ok").
    """
    device = torch.device(device)
    amp = autocast_dtype(cfg, device)
    opt = make_optimizer(model, cfg)
    pruner = Pruner(cfg.sparsity, model, cfg.steps).to(device) if cfg.sparsity.enabled else None
    if pruner is not None:
        pruner.start(opt)
    result = FitResult(status="ok", steps=0)
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        batch = probe.batch("train", step, cfg.batch_size, seed).to(device)

        def backward() -> float:
            with autocast_context(device, amp):
                loss, _ = probe_loss(model, probe, batch)
            loss.backward()
            return loss.item()

        loss_val, problem = optimizer_step(model, opt, step, cfg, backward, pruner)
        if problem is not None:
            result.status = "nan"
            result.message = f"{problem}; try a lower lr or grad_clip"
            break
        result.steps = step + 1
        result.losses.append(loss_val)
        if on_step is not None and on_step(step + 1, loss_val):
            break
        pruned = pruner is None or step + 1 >= pruner.final_step
        if cfg.stop_at_accuracy > 0 and pruned and \
                ((step + 1) % cfg.check_every == 0 or step + 1 == cfg.steps):
            acc = evaluate_probe(model, probe, batches=cfg.check_batches, batch_size=cfg.eval_batch_size,
                                 seed=seed, device=device, amp=amp, split="val")["accuracy"]
            result.checks.append((step + 1, acc))
            if acc >= cfg.stop_at_accuracy:
                result.reached_at = step + 1
                break
    result.train_s = time.perf_counter() - t0
    result.sparsity = pruner.sparsity() if pruner is not None else None
    return result


@torch.no_grad()
def evaluate_probe(model: nn.Module, probe: Probe, *, batches: int, batch_size: int, seed: int = 0,
                   device: torch.device | str = "cpu", amp: torch.dtype | None = None,
                   split: str = "test") -> dict[str, float]:
    """``probe.metrics`` of the summed ``probe.score`` over ``split`` batches ``0 .. batches-1``.

    Scores are sums and counts divided once at the end, so every scored position
    (or sequence) weighs the same, however many fall in each batch.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    for i in range(batches):
        batch = probe.batch(split, i, batch_size, seed).to(device)
        with autocast_context(device, amp):
            out = probe_outputs(model, probe, batch)
        for k, v in probe.score(out.float(), batch).items():
            totals[k] = totals.get(k, 0.0) + v
    model.train(was_training)
    return probe.metrics(totals)

"""Pointer tasks for the paired training loop (``seqlab.train.seq2seq``): a PointerNet learns
sort, planar convex hull or travelling-salesman tours (``seqlab.tasks.pointer_tasks``) by
teacher forcing, so ``seqlab train configs/pointer-tsp.yaml`` trains, checkpoints and resumes
one as it does any other model.

Every step draws fresh instances: sizes uniform in [min_size, max_size] from a generator
seeded by (seed, step), the instances of each size seeded likewise, so the batch of a step
depends on (seed, step) only and a resumed run sees the same ones. Validation is a fixed set
(its own seed, never a training one) of ``eval_pairs`` instances, sizes cycling through the
range: the loss per output token, and what the task is judged by when decoded greedily by
the engine: exact-sequence accuracy (sort, hull), or the tour length over the optimal one
(tsp, Held-Karp) and over nearest-neighbour's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import ConfigError
from seqlab.models.pointer import IGNORE, PointerNetConfig, decode, teacher_forcing
from seqlab.tasks.pointer_tasks import (HELD_KARP_MAX_N, held_karp, input_dim, mixed_batch,
                                        nearest_neighbour, tour_length)

VALIDATION_SEED = 2 ** 31 - 1   # training seeds are (seed * 1_000_003 + step); never this


def check_model(model: PointerNetConfig, cfg) -> None:
    """Refuse a pointer network that cannot learn ``cfg.task`` as configured, naming the fix.

    Raises:
        ConfigError: another input width than the task's, ``mask_visited`` other than the
            task needs (on for the permutations of sort and tsp, off for hull), sizes above
            ``max_n``, or tsp sizes beyond exact tours.
    """
    task = cfg.task
    if model.in_dim != input_dim(task):
        raise ConfigError(f"model.in_dim = {model.in_dim}, but {task} instances have "
                          f"{input_dim(task)} feature(s) per input: set model.in_dim = "
                          f"{input_dim(task)}")
    if model.mask_visited != (task != "hull"):
        why = ("its outputs are a permutation" if task != "hull" else
               "the hull visits only some inputs and stops")
        raise ConfigError(f"model.mask_visited = {model.mask_visited} does not fit {task}: "
                          f"{why}; set model.mask_visited = {task != 'hull'}")
    if cfg.max_size > model.max_n:
        raise ConfigError(f"train.max_size = {cfg.max_size} exceeds model.max_n = "
                          f"{model.max_n}: raise model.max_n or lower train.max_size")
    if task == "tsp" and cfg.max_size > HELD_KARP_MAX_N:
        raise ConfigError(f"train.max_size = {cfg.max_size}: tsp targets are exact "
                          f"(Held-Karp) tours, for n <= {HELD_KARP_MAX_N}; lower it")
    low = 1 if task == "sort" else 3
    if cfg.min_size < low:
        raise ConfigError(f"train.min_size = {cfg.min_size}: {task} needs n >= {low}")


class PointerTask:
    """One pointer task for the loop; see the module docstring."""

    def __init__(self, cfg, model: PointerNetConfig, device=None):
        check_model(model, cfg)
        self.cfg, self.end, self.device = cfg, model.max_n, device
        sizes = [cfg.min_size + i % (cfg.max_size - cfg.min_size + 1)
                 for i in range(cfg.eval_pairs)]
        self.validation = mixed_batch(cfg.task, sizes, VALIDATION_SEED, self.end)
        # The validation set is fixed, so its reference tours are measured once, not per eval.
        self._instances = [self.validation[0][b:b + 1, :size].double().numpy()
                           for b, size in enumerate(self.validation[1].tolist())]
        if cfg.task == "tsp":
            self._optimal = [held_karp(x)[0][0] for x in self._instances]
            self._nearest = [tour_length(x, nearest_neighbour(x))[0] for x in self._instances]

    def describe(self) -> str:
        return (f"{self.cfg.task} instances of {self.cfg.min_size} to {self.cfg.max_size} "
                "inputs, new ones every step")

    def batch(self, step: int):
        seed = self.cfg.seed * 1_000_003 + step
        rng = np.random.default_rng([self.cfg.seed, step])
        sizes = rng.integers(self.cfg.min_size, self.cfg.max_size + 1,
                             self.cfg.batch_size).tolist()
        return mixed_batch(self.cfg.task, sizes, seed, self.end)

    def _nll(self, model: nn.Module, batch) -> tuple[Tensor, int]:
        points, n, targets = batch
        inputs, labels = teacher_forcing(targets, self.end)
        state = model.condition(points.to(self.device), n.to(self.device))
        logits, _ = model(inputs.to(self.device), state)
        labels = labels.to(self.device)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                              ignore_index=IGNORE, reduction="sum")
        return nll, int((labels != IGNORE).sum())

    def loss(self, model: nn.Module, batch, teacher=None) -> tuple[Tensor, dict[str, float]]:
        nll, count = self._nll(model, batch)
        loss = nll / count
        return loss, {"ce": loss.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss per output token (nats, bits) and the task's own score, greedy."""
        was = model.training
        model.eval()
        points, n, targets = self.validation
        nll, count = self._nll(model, self.validation)
        loss = nll.double().item() / count
        out = {"loss": loss, "bits": loss / math.log(2), "tokens": count}
        tokens = decode(model, points, "greedy", n).tokens
        if self.cfg.task == "tsp":
            lengths = [tour_length(x, [t[:-1] if t[-1:] == [self.end] else t])[0]
                       for x, t in zip(self._instances, tokens)]
            out |= {"tour_over_optimal": float(np.mean(np.divide(lengths, self._optimal))),
                    "tour_over_nearest_neighbour":
                        float(np.mean(np.divide(lengths, self._nearest)))}
        else:
            out["accuracy"] = float(np.mean([t == y for t, y in zip(tokens, targets)]))
        model.train(was)
        return out


__all__ = ["PointerTask", "VALIDATION_SEED", "check_model"]

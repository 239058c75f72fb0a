"""Sparse weight matrices for sequence mixers: magnitude pruning and random-graph masks.

Two ways to make a mixer's matrices sparse, compared for RNNs in "Investigating
Sparsity in Recurrent Neural Networks" (see ``papers/abstracts.txt``):

* ``magnitude``: zero the smallest weights of each matrix, either gradually
  (Zhu & Gupta 2017, "To prune, or not to prune", arXiv:1710.01878: every
  ``frequency`` steps from ``start_step`` to ``end_step`` the sparsity rises as
  ``s_t = s_f (1 - (1 - (t - t_0) / (t_end - t_0))^3)``) or all at once at ``start_step``
  (``one_shot``; at step 0 that is pruning the initial weights). A weight once pruned
  stays pruned.
* ``random_graph``: the hidden-to-hidden matrix of a recurrent mixer follows a random
  graph over its hidden units, fixed before the first step: unit j feeds unit i iff
  (i, j) is an edge, in every gate block. Watts-Strogatz (ring lattice of degree k,
  edges rewired with probability p) or Barabasi-Albert (preferential attachment, m edges
  per new unit), from networkx, seeded.

The :class:`Pruner` holds one boolean mask per selected matrix (True = kept). Pruned
weights stay exactly zero through AdamW: their gradients are zeroed before clipping
and stepping, their moments are zeroed whenever a mask grows, so the update and the
decoupled decay of a pruned entry are both ``0``, and the masks are applied again after
every step. The masks are part of training checkpoints (safetensors tensors), so an
exact resume continues with the same masks.

Example:
    >>> cfg = SparsityConfig(target=0.9, method="magnitude", end_step=600)
    >>> pruner = Pruner(cfg, model, steps=1000)
    >>> pruner.start()                                  # masks for step 0, applied
    >>> optimizer_step(model, opt, step, train_cfg, backward, pruner=pruner)
    >>> pruner.sparsity()                               # fraction of zeros, all matrices
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqlab.config import Config, ConfigError, require
from seqlab.errors import CheckpointError
from seqlab.mixers.base import Mixer

# Without an explicit end, gradual pruning ends at this fraction of the run's steps,
# leaving the last quarter for the pruned network to recover (Zhu & Gupta prune over
# the first part of training and fine-tune at the final sparsity after).
DEFAULT_END_FRACTION = 0.75


@dataclass(frozen=True)
class SparsityConfig(Config):
    """Which matrices are made sparse, how, and how far.

    Attributes:
        target: final fraction of zeros in each selected matrix; 0 turns sparsity off
            (unless a random graph's ``k`` or ``m`` is given, which then decides it).
        params: ``recurrent``, the hidden-to-hidden matrices of recurrent mixers (lstm,
            gru, rnn), or ``mixers``, every matrix inside a mixer (magnitude only).
        method: ``magnitude`` pruning or a ``random_graph`` mask.
        schedule: magnitude only: ``gradual`` (Zhu & Gupta's cubic ramp from
            ``start_step`` to ``end_step``, a pruning every ``frequency`` steps) or
            ``one_shot`` (to ``target`` at ``start_step``).
        start_step, end_step, frequency: the schedule, in optimizer steps completed;
            ``end_step`` None means 3/4 of the run's steps.
        graph: ``watts_strogatz`` or ``barabasi_albert``.
        k, p: Watts-Strogatz degree (even, 2 <= k < hidden) and rewiring probability.
        m: Barabasi-Albert edges per new unit (1 <= m < hidden).
            Without ``k`` / ``m`` the degree is the one whose density is nearest
            ``1 - target``.
        seed: the graphs' seed; the i-th selected matrix uses ``seed + i``.
    """

    target: float = 0.0
    params: Literal["recurrent", "mixers"] = "recurrent"
    method: Literal["magnitude", "random_graph"] = "magnitude"
    schedule: Literal["gradual", "one_shot"] = "gradual"
    start_step: int = 0
    end_step: int | None = None
    frequency: int = 10
    graph: Literal["watts_strogatz", "barabasi_albert"] = "watts_strogatz"
    k: int | None = None
    p: float = 0.1
    m: int | None = None
    seed: int = 0

    def validate(self) -> None:
        require(0.0 <= self.target < 1.0, self, "target", "a fraction in [0, 1) (0: dense)")
        require(self.start_step >= 0, self, "start_step", "an int >= 0")
        require(self.frequency > 0, self, "frequency", "a positive int")
        require(self.end_step is None or self.end_step > self.start_step, self, "end_step",
                f"None (3/4 of the run) or a step after start_step = {self.start_step}")
        require(self.end_step is None or self.schedule == "gradual", self, "end_step",
                "None with schedule 'one_shot' (it prunes once, at start_step)")
        require(self.seed >= 0, self, "seed", "an int >= 0")
        require(0.0 <= self.p <= 1.0, self, "p", "a probability in [0, 1]")
        graph = self.method == "random_graph"
        require(self.k is None or (graph and self.graph == "watts_strogatz"), self, "k",
                "None: k is the degree of method 'random_graph' with graph 'watts_strogatz'")
        require(self.m is None or (graph and self.graph == "barabasi_albert"), self, "m",
                "None: m is the degree of method 'random_graph' with graph 'barabasi_albert'")
        require(self.k is None or (self.k >= 2 and self.k % 2 == 0), self, "k",
                "an even int >= 2 (each unit links k/2 neighbours on each side of the ring)")
        require(self.m is None or self.m >= 1, self, "m", "an int >= 1")
        if graph:
            require(self.params == "recurrent", self, "params",
                    "'recurrent' with method 'random_graph' (a graph over the hidden units "
                    "shapes the hidden-to-hidden matrices only)")
            require(self.target == 0.0 or (self.k is None and self.m is None), self, "target",
                    "0 when k or m is given (the graph's degree decides the sparsity); give one")
            require(self.start_step == 0 and self.end_step is None, self, "start_step",
                    "0 with end_step None: random-graph masks hold from the first step (the "
                    "schedule is magnitude pruning's)")

    @property
    def enabled(self) -> bool:
        return self.target > 0 or self.k is not None or self.m is not None

    def resolved(self, steps: int) -> SparsityConfig:
        """This config with ``end_step`` set for a run of ``steps`` steps.

        Raises:
            ConfigError: the schedule would not finish within ``steps``.
        """
        if self.method != "magnitude" or self.schedule != "gradual":
            out = self
        elif self.end_step is None:
            end = max(self.start_step + 1, int(DEFAULT_END_FRACTION * steps))
            out = dataclasses.replace(self, end_step=end)
        else:
            out = self
        last = out.end_step if out.end_step is not None else out.start_step
        if out.enabled and out.method == "magnitude" and last > steps:
            field = "end_step" if out.end_step is not None else "start_step"
            raise ConfigError(f"SparsityConfig.{field} = {last} is not allowed: expected at most "
                              f"the run's steps = {steps}, or the target would never be reached")
        return out


def cubic_sparsity(step: int, target: float, start: int, end: int) -> float:
    """Zhu & Gupta's gradual schedule from 0: the sparsity after ``step`` steps.

    ``0`` before ``start``, ``target`` from ``end`` on, and in between
    ``target * (1 - (1 - (step - start) / (end - start))^3)``: fast pruning first, while
    the network has redundant weights, slower towards the end.
    """
    if step <= start:
        return 0.0
    if step >= end:
        return target
    return target * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


# -- the matrices a config selects ------------------------------------------------------------
def recurrent_matrices(model: nn.Module) -> dict[str, tuple[nn.Parameter, int, int]]:
    """The hidden-to-hidden matrices of torch's fused RNN modules in ``model``.

    Returns:
        ``{parameter name: (parameter, gate blocks, hidden units)}``; the parameter has
        shape ``(gates * hidden, hidden)`` (4 gates for an LSTM, 3 for a GRU, 1 for an
        Elman RNN).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    found = {}
    for module in model.modules():
        if not isinstance(module, nn.RNNBase):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith("weight_hh_l") and p.requires_grad and id(p) in names:
                hidden = module.hidden_size
                found[names[id(p)]] = (p, p.shape[0] // hidden, hidden)
    return found


def mixer_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every trainable matrix (2 or more dimensions) inside a sequence mixer of ``model``."""
    inside = {id(p) for m in model.modules() if isinstance(m, Mixer) for p in m.parameters()}
    return {n: p for n, p in model.named_parameters()
            if id(p) in inside and p.dim() >= 2 and p.requires_grad}


def select_parameters(model: nn.Module, cfg: SparsityConfig) -> dict[str, nn.Parameter]:
    """The matrices ``cfg.params`` names, in ``model.named_parameters`` order.

    Raises:
        ConfigError: there are none (naming the mixers that have them).
    """
    if cfg.params == "recurrent":
        chosen = {n: p for n, (p, _, _) in recurrent_matrices(model).items()}
        hint = ("the recurrent mixers lstm, gru and rnn have them; or use sparsity.params="
                "mixers (magnitude) for every matrix of every mixer")
    else:
        chosen = mixer_matrices(model)
        hint = "the model has no mixer with a weight matrix"
    if not chosen:
        raise ConfigError(f"SparsityConfig.params = {cfg.params!r} selects no matrix of this "
                          f"model: {hint}")
    return chosen


# -- random graphs ------------------------------------------------------------------------------
def graph_degree(graph: str, n: int, target: float) -> int:
    """The Watts-Strogatz ``k`` or Barabasi-Albert ``m`` whose density is nearest ``1 - target``.

    Densities over the ``n x n`` matrix: Watts-Strogatz ``k / n``; Barabasi-Albert
    ``2 m (n - m) / n^2`` (at most 1/2, at ``m = n / 2``).

    Raises:
        ConfigError: no such degree for ``n`` units.
    """
    density = 1.0 - target
    if graph == "watts_strogatz":
        k = 2 * round(density * n / 2)
        if not 2 <= k < n:
            raise ConfigError(f"SparsityConfig.target = {target} is not allowed for a "
                              f"Watts-Strogatz graph over {n} hidden units: its density k/n "
                              f"needs an even k with 2 <= k < {n}, i.e. a target in "
                              f"[{1 - (n - 1 - (n - 1) % 2) / n:.3g}, {1 - 2 / n:.3g}]")
        return k
    if density > 0.5:
        raise ConfigError(f"SparsityConfig.target = {target} is not allowed for a Barabasi-Albert "
                          "graph: it is at most half dense (m = n/2); use a target >= 0.5 or "
                          "graph=watts_strogatz")
    m = round(n * (1.0 - math.sqrt(1.0 - 2.0 * density)) / 2.0)
    if not 1 <= m < n:
        raise ConfigError(f"SparsityConfig.target = {target} is not allowed for a Barabasi-Albert "
                          f"graph over {n} hidden units: it needs 1 <= m < {n}, i.e. a target "
                          f"of at most {1 - 2 * (n - 1) / n ** 2:.3g}")
    return m


def graph_adjacency(graph: str, n: int, degree: int, p: float, seed: int) -> Tensor:
    """The ``(n, n)`` 0/1 adjacency matrix of a networkx random graph (symmetric, no loops).

    Args:
        graph: ``watts_strogatz`` (``degree`` = k, rewiring probability ``p``) or
            ``barabasi_albert`` (``degree`` = m).

    Raises:
        ConfigError: the degree does not fit ``n`` units.
    """
    import networkx as nx   # imported here: only random-graph masks need it

    if graph == "watts_strogatz":
        if not 2 <= degree < n:
            raise ConfigError(f"SparsityConfig.k = {degree} is not allowed for {n} hidden units: "
                              f"expected an even int with 2 <= k < {n}")
        g = nx.watts_strogatz_graph(n, degree, p, seed=seed)
    else:
        if not 1 <= degree < n:
            raise ConfigError(f"SparsityConfig.m = {degree} is not allowed for {n} hidden units: "
                              f"expected 1 <= m < {n}")
        g = nx.barabasi_albert_graph(n, degree, seed=seed)
    a = torch.zeros(n, n, dtype=torch.bool)
    edges = torch.tensor(list(g.edges()), dtype=torch.long).reshape(-1, 2)
    a[edges[:, 0], edges[:, 1]] = True
    a[edges[:, 1], edges[:, 0]] = True
    return a


# -- the pruner ---------------------------------------------------------------------------------
class Pruner:
    """Holds the masks of ``cfg``'s matrices of ``model``, keeps pruned weights at zero and
    updates the masks on schedule.

    Call :meth:`start` once before the first step of a fresh run (or :meth:`load_state_dict`
    when resuming), :meth:`mask_gradients` after the backward pass and :meth:`after_step`
    after each optimizer step; ``seqlab.train.optim.optimizer_step`` does the last two.

    Args:
        cfg: the sparsity options (``enabled``).
        model: the model whose matrices are masked (the one the optimizer steps, not a
            DDP or compiled wrapper).
        steps: the run's optimizer steps (resolves ``end_step`` None).

    Raises:
        ConfigError: no matrix selected, a schedule past ``steps``, or a graph degree that
            does not fit a matrix.
    """

    def __init__(self, cfg: SparsityConfig, model: nn.Module, steps: int):
        if not cfg.enabled:
            raise ConfigError("SparsityConfig.target = 0 is not allowed for a Pruner: expected a "
                              "target in (0, 1), or k / m for a random graph")
        self.cfg = cfg.resolved(steps)
        self.params = select_parameters(model, self.cfg)
        self.masks: dict[str, Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                         for n, p in self.params.items()}
        self._graph_masks: dict[str, Tensor] | None = None
        if self.cfg.method == "random_graph":
            self._graph_masks = self._build_graph_masks(model)

    # -- masks --------------------------------------------------------------------------------
    def _build_graph_masks(self, model: nn.Module) -> dict[str, Tensor]:
        cfg, out = self.cfg, {}
        for i, (name, (p, gates, hidden)) in enumerate(recurrent_matrices(model).items()):
            if p.shape != (gates * hidden, hidden):
                raise ConfigError(f"{name} has shape {tuple(p.shape)}, not (gates x hidden, "
                                  f"hidden): a random graph over hidden units needs square "
                                  "gate blocks (an LSTM with proj_size has none)")
            given = cfg.k if cfg.graph == "watts_strogatz" else cfg.m
            degree = given if given is not None else graph_degree(cfg.graph, hidden, cfg.target)
            adj = graph_adjacency(cfg.graph, hidden, degree, cfg.p, cfg.seed + i)
            out[name] = adj.repeat(gates, 1).to(p.device)   # (gates * hidden, hidden)
        return out

    def target_at(self, step: int) -> float:
        """The sparsity the schedule asks for after ``step`` optimizer steps (magnitude)."""
        c = self.cfg
        if c.schedule == "one_shot":
            return c.target if step >= c.start_step else 0.0
        return cubic_sparsity(step, c.target, c.start_step, c.end_step)

    def due(self, step: int) -> bool:
        """Whether the masks are recomputed after ``step`` optimizer steps."""
        c = self.cfg
        if c.method == "random_graph":
            return step == 0
        if c.schedule == "one_shot":
            return step == c.start_step
        return c.start_step <= step <= c.end_step and \
            ((step - c.start_step) % c.frequency == 0 or step == c.end_step)

    @property
    def final_step(self) -> int:
        """The step after which the masks no longer change."""
        c = self.cfg
        if c.method == "random_graph":
            return 0
        return c.start_step if c.schedule == "one_shot" else c.end_step

    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Recompute the masks if due after ``step`` steps, zero the optimizer moments of
        newly pruned entries and apply the masks; True when a mask changed."""
        changed = False
        if self.due(step):
            for name, p in self.params.items():
                new = self._new_mask(name, p, step)
                if new is not None:
                    self.masks[name] = new
                    changed = True
                    if optimizer is not None:
                        self._zero_moments(optimizer, p, new)
        self.apply()
        return changed

    def _new_mask(self, name: str, p: Tensor, step: int) -> Tensor | None:
        if self._graph_masks is not None:
            return self._graph_masks[name]
        mask = self.masks[name]
        n_zero = round(self.target_at(step) * p.numel())
        if n_zero <= int((~mask).sum()):
            return None   # masks only shrink: a pruned weight is never revived
        # Pruned entries score -1 so they stay pruned; a stable sort keeps ties deterministic.
        score = torch.where(mask, p.detach().abs(), torch.full_like(p, -1.0)).flatten()
        keep = torch.argsort(score, descending=True, stable=True)[:p.numel() - n_zero]
        new = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        new[keep] = True
        return new.view_as(p)

    @staticmethod
    def _zero_moments(optimizer: torch.optim.Optimizer, p: Tensor, mask: Tensor) -> None:
        # AdamW's exp_avg / exp_avg_sq (and max_exp_avg_sq): a stale moment would move a
        # pruned weight, only for the after-step mask to pull it back.
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, Tensor) and value.shape == p.shape:
                value.masked_fill_(~mask, 0)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (masked_fill: exact, whatever the weight held)."""
        for name, p in self.params.items():
            p.masked_fill_(~self.masks[name], 0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (before clipping, so the norm is the live
        weights', and before the step, so their moments stay zero)."""
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.masked_fill_(~self.masks[name], 0)

    def start(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The masks of step 0 of a fresh run (a random graph, or one-shot pruning at 0), applied."""
        self.update(0, optimizer)

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """After optimizer step number ``step`` (1-based): prune if due, re-apply the masks."""
        self.update(step, optimizer)

    def to(self, device: torch.device | str) -> Pruner:
        self.masks = {n: m.to(device) for n, m in self.masks.items()}
        if self._graph_masks is not None:
            self._graph_masks = {n: m.to(device) for n, m in self._graph_masks.items()}
        return self

    # -- reporting and checkpoints ------------------------------------------------------------
    def sparsity(self) -> float:
        """Fraction of zeros in the weights of all selected matrices together."""
        zeros = sum(int((p == 0).sum()) for p in self.params.values())
        return zeros / sum(p.numel() for p in self.params.values())

    def sparsity_by_matrix(self) -> dict[str, float]:
        return {n: float((p == 0).float().mean()) for n, p in self.params.items()}

    def state_dict(self) -> dict[str, Tensor]:
        """The masks, ``{parameter name: bool tensor}`` on the CPU (saved as safetensors)."""
        return {n: m.detach().cpu().contiguous() for n, m in self.masks.items()}

    def load_state_dict(self, masks: dict[str, Tensor]) -> None:
        """Restore the masks of a checkpoint and apply them.

        Raises:
            CheckpointError: missing, extra or ill-shaped masks (naming them).
        """
        if sorted(masks) != sorted(self.masks):
            missing = sorted(set(self.masks) - set(masks))
            extra = sorted(set(masks) - set(self.masks))
            raise CheckpointError(f"the checkpoint's sparsity masks do not fit the model (missing "
                                  f"{missing or 'none'}, unexpected {extra or 'none'}); resume "
                                  "with the sparsity options the run started with")
        for name, mask in masks.items():
            p = self.params[name]
            if mask.shape != p.shape or mask.dtype != torch.bool:
                raise CheckpointError(f"the checkpoint's sparsity mask {name} is {mask.dtype} "
                                      f"{tuple(mask.shape)}, not bool {tuple(p.shape)}; the "
                                      "checkpoint is damaged or of another model")
            self.masks[name] = mask.to(p.device)
        self.apply()


def sparsity_for_run(requested: SparsityConfig, steps: int,
                     saved: SparsityConfig | None = None, where: str = "") -> SparsityConfig:
    """A training run's sparsity options with ``end_step`` resolved.

    Fresh runs resolve it from ``steps``; a resumed run keeps the schedule it started with
    (``saved``, from its config.yaml), so more steps on resume do not move the schedule.

    Raises:
        CheckpointError: resuming with other sparsity options than the run's (its masks
            belong to them).
    """
    if saved is None:
        return requested.resolved(steps) if requested.enabled else requested
    if requested.end_step is None and saved.end_step is not None:
        requested = dataclasses.replace(requested, end_step=saved.end_step)
    if requested != saved:
        have, want = saved.to_dict(), requested.to_dict()
        diff = [f"{k}: run {have[k]!r} vs requested {want[k]!r}" for k in have if have[k] != want[k]]
        raise CheckpointError(f"the run in {where} was trained with other sparsity options ("
                              + "; ".join(diff) + "); resume without sparsity options, or use "
                              "another --out")
    return saved.resolved(steps) if saved.enabled else saved


__all__ = ["SparsityConfig", "Pruner", "cubic_sparsity", "graph_adjacency", "graph_degree",
           "recurrent_matrices", "mixer_matrices", "select_parameters", "sparsity_for_run"]

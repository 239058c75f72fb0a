"""Training on (source, target) pairs, with the loss on the target tokens only, and distillation
from a teacher (Hinton et al. 2015, arXiv:1503.02531; across architectures as in "Return of the
Encoder", Elfeki et al. 2025, arXiv:2501.16273).

One loop trains either form of a sequence-to-sequence model on the same pairs, in ids of
bytes followed by ``start_id`` (256) and ``end_id`` (257):

    encoder-decoder (encdec):  encoder reads src;  decoder inputs [start] + tgt, labels tgt + [end]
    decoder-only (lm, ...):    inputs src + [start] + tgt,  labels (none on src) + tgt + [end]

Both score the same ``len(tgt) + 1`` tokens in the same order, so a teacher of one form and a
student of the other line up token for token. With a teacher (``teacher``, a saved model of
the same vocabulary, decoder-only in the paper's recipe) each target token's loss is

    (1 - w) CE(p_student, y) + w τ² KL(p_teacher^τ || p_student^τ),  p^τ = softmax(logits / τ)

(``distill_weight`` w, ``distill_temperature`` τ; τ² keeps the gradient's scale, Hinton et al.).

Batches: each epoch is a seeded permutation of the pairs, cut into pools of 32 batches; a pool
is sorted by length before it is cut, so a batch pads little (sources run from 39 bytes to a
kilobyte), and the batches are then shuffled. The batch of a step depends on (seed, step) only.

The run folder is laid out as ``seqlab train``'s (``checkpoints/step-N`` written atomically,
``latest``, ``metrics.jsonl``, a lock), so every command that takes a run folder reads it, and
``--resume`` continues it exactly from the resolved config it keeps in ``pairs-config.yaml``;
``pairs-run.json`` adds the losses, evaluations and wall time. What it does not do: several processes, gradient accumulation,
autocast.

Example:
    >>> lm = PairsRunConfig.from_dict({"model": {"kind": "lm", "dim": 64},
    ...                                "train": {"steps": 200}, "out_dir": "runs/lm"})
    >>> result = train_pairs(lm)                     # the stdlib's docstring pairs
    >>> kd = PairsRunConfig.from_dict({"model": {"kind": "encdec", "dim": 64},
    ...                                "train": {"steps": 200, "teacher": "runs/lm"},
    ...                                "out_dir": "runs/encdec-kd"})   # distilled from it
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from seqlab.config import Config, ConfigError, require
from seqlab.errors import CheckpointError
from seqlab.models import kinds
from seqlab.models.encdec import EncDec, EncDecConfig, pad_rows
from seqlab.train.checkpoint import (clean_leftovers, list_checkpoints, load_resume_checkpoint,
                                     write_checkpoint)
from seqlab.train.lock import RunLock
from seqlab.train.metrics import MetricsLog, repair_metrics
from seqlab.train.objectives import IGNORE
from seqlab.train.optim import OptimizerConfig, lr_at, make_optimizer, optimizer_step

TEXT_TASKS = ("stdlib-docstrings",)   # seqlab.tasks.stdlib_functions.summarisation_pairs
POINTER_TASKS = ("sort", "hull", "tsp")  # seqlab.tasks.pointer_tasks, for the pointer family
TASKS = TEXT_TASKS + POINTER_TASKS
RUN_FILE = "pairs-run.json"
CONFIG_FILE = "pairs-config.yaml"   # the resolved config; not config.yaml, a stream run's
POOL = 32                        # batches per length-sorted pool

Pair = tuple[Sequence[int], Sequence[int]]   # (source ids, target ids)


@dataclass(frozen=True)
class PairsTrainConfig(OptimizerConfig):
    """Options of a paired run; the optimizer's and schedule's fields are
    ``seqlab.train.optim.OptimizerConfig``'s (``precision`` is not used: float32).

    Attributes:
        task: the pairs: ``"stdlib-docstrings"``, function source -> its docstring's first
            line, split by module (``seqlab.tasks.stdlib_functions``); or, for the pointer
            family, ``"sort"``, ``"hull"``, ``"tsp"`` (``seqlab.tasks.pointer_tasks``:
            instances drawn per step, their sizes uniform in [min_size, max_size]).
        min_size, max_size: instance sizes of the pointer tasks.
        max_source_bytes: drop pairs whose source is longer (None keeps all).
        batch_size: pairs per step.
        start_id, end_id: the decoder's first input (a decoder-only model's separator) and
            the end of a target; an encdec model's config must hold the same ids.
        teacher: a saved model (run folder or model folder) to distil from, or None.
        distill_weight: w, the share of the KL term in the loss (0: plain cross-entropy).
        distill_temperature: τ of the softened distributions.
        eval_every: evaluate on validation pairs every this many steps (0: at the end only).
        eval_pairs: validation pairs evaluated (the first ones of the split).
        log_every: write a train record every this many steps.
        seed: initialisation and batch order.
        device: auto, cpu, cuda, cuda:N.
        time_limit: seconds; stop (and save) when reached.
        save_every: write a checkpoint every this many steps (and always at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
    """

    task: str = "stdlib-docstrings"
    min_size: int = 5
    max_size: int = 10
    max_source_bytes: int | None = 1024
    batch_size: int = 16
    start_id: int = 256
    end_id: int = 257
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    eval_every: int = 0
    eval_pairs: int = 256
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    time_limit: float | None = None
    save_every: int = 250
    keep_checkpoints: int = 2

    def validate(self) -> None:
        super().validate()
        require(self.task in TASKS, self, "task", " | ".join(TASKS))
        require(1 <= self.min_size <= self.max_size, self, "min_size",
                f"an int in [1, max_size = {self.max_size}]")
        require(self.max_source_bytes is None or self.max_source_bytes > 0, self,
                "max_source_bytes", "a positive int or None")
        for name in ("batch_size", "eval_pairs", "log_every", "save_every", "keep_checkpoints"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        for name in ("start_id", "end_id", "eval_every", "seed"):
            require(getattr(self, name) >= 0, self, name, "an int >= 0")
        require(self.end_id != self.start_id, self, "end_id",
                f"an id other than start_id = {self.start_id}")
        require(0 <= self.distill_weight <= 1, self, "distill_weight", "a number in [0, 1]")
        require(self.distill_temperature > 0, self, "distill_temperature", "a positive number")
        require(self.time_limit is None or self.time_limit > 0, self, "time_limit",
                "a positive number of seconds or None")


@dataclass(frozen=True)
class PairsRunConfig(Config):
    """A paired run: the model (any family of ``seqlab.models.kinds``; ``kind: encdec`` or a
    decoder-only one), the training options and the run folder."""

    model: Config = field(default_factory=EncDecConfig)
    train: PairsTrainConfig = field(default_factory=PairsTrainConfig)
    out_dir: str = "runs/pairs"

    def __post_init__(self) -> None:
        if not isinstance(self.model, Config):
            object.__setattr__(self, "model", kinds.config_from_dict(self.model))
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "model": kinds.config_to_dict(self.model)}


@dataclass
class PairsResult:
    step: int                                   # optimizer steps completed
    stopped: str                                # done | nan | time_limit
    losses: list[float] = field(default_factory=list)     # the loss of each step
    evals: list[dict] = field(default_factory=list)
    out: Path | None = None
    message: str = ""


# -- batches ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairBatch:
    """What a model of either form reads for a batch of pairs; ``labels`` (B, T) are the
    targets of its logits, IGNORE where nothing is scored."""

    inputs: Tensor                      # (B, T) decoder inputs, or the decoder-only rows
    labels: Tensor                      # (B, T)
    source: Tensor | None = None        # (B, S) encoder inputs (encdec only)
    lengths: Tensor | None = None       # (B,) source lengths (encdec only)

    def to(self, device) -> "PairBatch":
        move = (lambda t: None if t is None else t.to(device))
        return PairBatch(move(self.inputs), move(self.labels), move(self.source),
                         move(self.lengths))


def encdec_batch(pairs: Sequence[Pair], start_id: int, end_id: int) -> PairBatch:
    """Sources for the encoder; decoder inputs ``[start] + tgt``, labels ``tgt + [end]``."""
    source, lengths = pad_rows([s for s, _ in pairs])
    inputs, _ = pad_rows([[start_id, *t] for _, t in pairs])
    labels, _ = pad_rows([[*t, end_id] for _, t in pairs], pad=IGNORE)
    return PairBatch(inputs, labels, source, lengths)


def decoder_only_batch(pairs: Sequence[Pair], start_id: int, end_id: int) -> PairBatch:
    """Rows ``src + [start] + tgt`` (padded after), labels ``tgt + [end]`` at the positions
    from the start id on, IGNORE on the source."""
    inputs, _ = pad_rows([[*s, start_id, *t] for s, t in pairs])
    labels, _ = pad_rows([[IGNORE] * len(s) + [*t, end_id] for s, t in pairs], pad=IGNORE)
    return PairBatch(inputs, labels)


def make_batch(model: nn.Module, pairs: Sequence[Pair], start_id: int, end_id: int) -> PairBatch:
    """The batch of ``model``'s form: encoder-decoder or decoder-only."""
    fn = encdec_batch if isinstance(model, EncDec) else decoder_only_batch
    return fn(pairs, start_id, end_id)


def scored_logits(model: nn.Module, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """``(logits (N, V), labels (N,))`` at the N scored positions, row by row in order: the
    same N tokens, in the same order, for either form of model on the same pairs."""
    if batch.source is not None:
        logits, _ = model(batch.inputs, model.condition(batch.source, batch.lengths))
    else:
        logits, _ = model(batch.inputs)
    scored = batch.labels != IGNORE
    return logits[scored], batch.labels[scored]


def batch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches of pair indices: a seeded permutation, sorted by length inside pools
    of ``POOL`` batches, cut, shuffled; the short batch of each pool is dropped."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2 ** 62)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    batches = []
    for i in range(0, len(perm), batch_size * POOL):
        pool = sorted(perm[i:i + batch_size * POOL], key=lambda j: lengths[j])
        batches += [pool[k:k + batch_size] for k in range(0, len(pool) - batch_size + 1,
                                                          batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


# -- losses ----------------------------------------------------------------------------------
def distill_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over rows of ``KL(softmax(teacher / τ) || softmax(student / τ))``, logits (N, V)."""
    t = F.log_softmax(teacher.float() / temperature, -1)
    s = F.log_softmax(student.float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def pair_loss(model: nn.Module, pairs: Sequence[Pair], cfg: PairsTrainConfig,
              teacher: nn.Module | None = None, device=None) -> tuple[Tensor, dict[str, float]]:
    """The training loss on ``pairs`` and its parts (``ce``, and ``kl`` with a teacher).

    Raises:
        ValueError: the teacher scores other tokens than the student (a bug in a batch form).
    """
    batch = make_batch(model, pairs, cfg.start_id, cfg.end_id).to(device)
    logits, labels = scored_logits(model, batch)
    ce = F.cross_entropy(logits.float(), labels)
    if teacher is None or cfg.distill_weight == 0:
        return ce, {"ce": ce.item()}
    with torch.no_grad():
        t_batch = make_batch(teacher, pairs, cfg.start_id, cfg.end_id).to(device)
        t_logits, t_labels = scored_logits(teacher, t_batch)
    if not torch.equal(t_labels, labels):
        raise ValueError("the teacher's scored tokens differ from the student's")
    tau, w = cfg.distill_temperature, cfg.distill_weight
    kl = distill_kl(logits, t_logits, tau)
    return (1 - w) * ce + w * tau ** 2 * kl, {"ce": ce.item(), "kl": kl.item()}


@torch.no_grad()
def evaluate_pairs(model: nn.Module, pairs: Sequence[Pair], cfg: PairsTrainConfig,
                   device=None) -> dict[str, float]:
    """Mean cross-entropy per target token (the end id included) over ``pairs``, in nats and
    in bits; summed in float64 and divided once, so independent of the batch size."""
    was = model.training
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, len(pairs), cfg.batch_size):
        batch = make_batch(model, pairs[i:i + cfg.batch_size], cfg.start_id, cfg.end_id)
        logits, labels = scored_logits(model, batch.to(device))
        nll += F.cross_entropy(logits.float(), labels, reduction="sum").double().item()
        count += labels.numel()
    model.train(was)
    loss = nll / count if count else float("nan")   # no pairs: nothing measured
    return {"loss": loss, "bits": loss / math.log(2), "tokens": count}


# -- what the loop trains on ----------------------------------------------------------------
class PairsTask:
    """The text pairs of ``stdlib-docstrings``: batches by :func:`batch_order`, the loss of
    :func:`pair_loss`, the validation of :func:`evaluate_pairs`.

    The loop asks a task for three things (``seqlab.train.pointer_task.PointerTask`` is the
    other): ``batch(step)``, which depends on (seed, step) only so that a resumed run sees the
    same batches; ``loss(model, batch, teacher)``; ``evaluate(model)``."""

    def __init__(self, cfg: PairsTrainConfig, train: Sequence[Pair], validation: Sequence[Pair],
                 device=None):
        self.cfg, self.train, self.device = cfg, list(train), device
        self.validation = list(validation)[:cfg.eval_pairs]
        if not self.train:
            raise ConfigError("there are no training pairs (check train.max_source_bytes)")
        self.lengths = [len(s) + len(t) for s, t in self.train]
        self.per_epoch = len(batch_order(self.lengths, cfg.batch_size, cfg.seed, 0))
        if self.per_epoch == 0:
            raise ConfigError(f"{len(self.train)} training pairs make no batch of "
                              f"train.batch_size = {cfg.batch_size}; lower it")
        self._epoch, self._order = -1, []

    def describe(self) -> str:
        return f"{len(self.train):,} pairs"

    def batch(self, step: int) -> list[Pair]:
        epoch = step // self.per_epoch
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = batch_order(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)
        return [self.train[i] for i in self._order[step % self.per_epoch]]

    def loss(self, model: nn.Module, pairs, teacher=None) -> tuple[Tensor, dict[str, float]]:
        return pair_loss(model, pairs, self.cfg, teacher, self.device)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_pairs(model, self.validation, self.cfg, self.device)


def make_task(run: "PairsRunConfig", train: Sequence[Pair] | None = None,
              validation: Sequence[Pair] | None = None, device=None):
    """The task ``run.train.task`` names, for ``run.model``'s family.

    Raises:
        ConfigError: a task the family cannot learn (text pairs for a pointer network, or
            a pointer task for a model of tokens).
    """
    from seqlab.models.pointer import PointerNetConfig

    cfg, pointer = run.train, isinstance(run.model, PointerNetConfig)
    if pointer != (cfg.task in POINTER_TASKS):
        want = " | ".join(POINTER_TASKS if pointer else TEXT_TASKS)
        raise ConfigError(f"train.task = {cfg.task!r} is not a task of the "
                          f"{kinds.kind_of_config(run.model)} family: expected {want}")
    if pointer:
        from seqlab.train.pointer_task import PointerTask

        if cfg.teacher is not None:
            raise ConfigError("train.teacher: distillation compares token distributions of "
                              "text pairs; a pointer task has none to share: drop --teacher")

        return PointerTask(cfg, run.model, device)
    train = list(train) if train is not None else load_task(cfg, "train")
    validation = list(validation) if validation is not None else load_task(cfg, "validation")
    return PairsTask(cfg, train, validation, device)


# -- the run ---------------------------------------------------------------------------------
def load_task(cfg: PairsTrainConfig, split: str) -> list[Pair]:
    """The task's pairs of ``split`` as byte ids."""
    from seqlab.tasks.stdlib_functions import summarisation_pairs

    return [(list(s.encode()), list(t.encode()))
            for s, t in summarisation_pairs(split, cfg.max_source_bytes)]


def build_model(run: PairsRunConfig) -> nn.Module:
    """A fresh model of ``run.model``, its vocabulary grown to hold the start and end ids
    (a decoder-only config's 256 bytes become 258 ids).

    Raises:
        ConfigError: an encdec config whose start or end id is not the run's.
    """
    m, t = run.model, run.train
    if t.task in POINTER_TASKS:
        from seqlab.train.pointer_task import check_model

        check_model(m, t)
        torch.manual_seed(t.seed)
        return kinds.build(m)
    if isinstance(m, EncDecConfig) and (m.start_id, m.end_id) != (t.start_id, t.end_id):
        raise ConfigError(f"model.start_id, model.end_id = {m.start_id}, {m.end_id} but "
                          f"train.start_id, train.end_id = {t.start_id}, {t.end_id}: the "
                          "model decodes with its own ids, so give both the same")
    need = max(t.start_id, t.end_id) + 1
    if m.vocab_size < need:
        m = kinds.with_vocab_size(m, need)
    torch.manual_seed(t.seed)
    return kinds.build(m)


def load_teacher(path: str, vocab_size: int, device) -> nn.Module:
    """The frozen teacher saved at ``path`` (a model folder or a run folder).

    Raises:
        CheckpointError: nothing loadable there, or a vocabulary other than the student's.
    """
    from seqlab.models.io import load
    from seqlab.train.checkpoint import resolve_model_dir

    teacher = load(resolve_model_dir(path), device=device).eval()
    if teacher.vocab_size != vocab_size:
        raise CheckpointError(f"the teacher {path} has a vocabulary of {teacher.vocab_size} ids "
                              f"and the student {vocab_size}; distillation compares their "
                              "distributions id by id: train the teacher on the same pairs "
                              "(seqlab train-pairs with a decoder-only model)")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# Fields a resumed run may change: they steer when to stop, log and save, never what is learned.
RESUMABLE_CHANGES = ("steps", "time_limit", "eval_every", "log_every", "save_every",
                     "keep_checkpoints", "device")


def _open_run(run: PairsRunConfig, resume: bool, device):
    """(model or None, trainer state or None) of the run folder; refuses what would overwrite
    or silently change a run. Call with the run's lock held."""
    from seqlab.models.io import CONFIG

    out = Path(run.out_dir)
    clean_leftovers(out)   # safe: the lock says their writers are dead
    if (out / CONFIG).exists():
        raise CheckpointError(f"{out} already holds a model saved without checkpoints (by an "
                              "older seqlab); choose another out_dir (--out). Nothing was "
                              "overwritten.")
    if not resume:
        if list_checkpoints(out):
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it, or "
                                  "choose another out_dir (--out). Nothing was overwritten.")
        return None, None
    ckpt, model, state, _ = load_resume_checkpoint(out, device)
    saved = (state.get("run") or {}).get("config") or {}
    now = run.to_dict()
    if saved.get("model") != now["model"]:
        raise ConfigError(f"--resume: the model config differs from the one {out} was trained "
                          "with; drop the model options, or choose another --out")
    changed = sorted(k for k in set(saved.get("train", {})) | set(now["train"])
                     if k not in RESUMABLE_CHANGES
                     and saved.get("train", {}).get(k) != now["train"].get(k))
    if changed:
        raise ConfigError(f"--resume: train.{changed[0]} differs from the run in {out} "
                          f"({saved['train'].get(changed[0])!r} there, "
                          f"{now['train'].get(changed[0])!r} now); only "
                          f"{', '.join(RESUMABLE_CHANGES)} may change on resume")
    if state["step"] > run.train.steps:
        raise ConfigError(f"train.steps = {run.train.steps}: the run in {out} is already at step "
                          f"{state['step']}; give --steps above it to train further")
    return model, state


def train_pairs(run: PairsRunConfig, *, resume: bool = False, model: nn.Module | None = None,
                train: Sequence[Pair] | None = None, validation: Sequence[Pair] | None = None,
                progress: bool = True) -> PairsResult:
    """Train ``run.model`` (or ``model``) on the pairs, with checkpoints in ``run.out_dir``.

    Checkpoints are those of ``seqlab train`` (``checkpoints/step-N``, written atomically,
    every ``save_every`` steps and at the end), so ``seqlab.train.checkpoint.resolve_model_dir``
    and every command that takes a run folder read the newest. ``resume`` continues the run
    from its newest intact checkpoint exactly: a step's batch depends on (seed, step) only,
    and the optimizer's moments and the random generator's state are restored.

    Args:
        run: model, options and run folder.
        resume: continue the run in ``run.out_dir``.
        model: a model to train instead of a fresh one of ``run.model`` (not with ``resume``).
        train, validation: pairs of byte ids to use instead of ``run.train.task``'s.
        progress: show a progress bar.

    Raises:
        CheckpointError: the run folder already holds a run (without ``resume``), holds no
            intact checkpoint (with it), is in use, or a bad teacher.
        ConfigError: inconsistent ids, no pairs, or a resumed run whose options changed.
    """
    from seqlab.train.trainer import resolve_device

    if resume and model is not None:
        raise ValueError("resume continues the run's own model: do not pass model as well")
    cfg, out = run.train, Path(run.out_dir)
    device = resolve_device(cfg.device)
    lock = RunLock.acquire(out)
    try:
        saved_model, state = _open_run(run, resume, device)
        task = make_task(run, train, validation, device)
        if saved_model is not None:
            model = saved_model
        model = (model if model is not None else build_model(run)).to(device)
        teacher = (load_teacher(cfg.teacher, model.vocab_size, device)
                   if cfg.teacher is not None and cfg.distill_weight > 0 else None)
        opt = make_optimizer(model, cfg)
        result = PairsResult(step=0, stopped="done", out=out)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            result.step = state["step"]
            result.losses = list(state["run"].get("losses", []))
            result.evals = list(state["run"].get("evals", []))
            repair_metrics(out / "metrics.jsonl", result.step)
        return _loop(run, model, teacher, opt, task, result, progress)
    finally:
        lock.release()


def _loop(run, model, teacher, opt, task, result, progress) -> PairsResult:
    """The steps from ``result.step`` to ``run.train.steps``, with logging, evaluation and
    checkpoints."""
    import yaml

    from seqlab.train.trainer import write_atomic

    cfg, out = run.train, Path(run.out_dir)
    # The resolved config: seqlab train --resume reads it back.
    write_atomic(out / CONFIG_FILE, yaml.safe_dump(run.to_dict(), sort_keys=False))
    log = MetricsLog(out, enabled=True)

    def save(step: int) -> None:
        state = {"step": step, "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                 "run": {"config": run.to_dict(), "losses": result.losses,
                         "evals": result.evals}}
        write_checkpoint(out, step, model, state, keep=cfg.keep_checkpoints)

    bar = tqdm(total=cfg.steps, initial=result.step, unit="step", dynamic_ncols=True,
               disable=not progress, desc="train-pairs")
    if progress:
        bar.write(f"model: {kinds.kind_of(model)}, {model.num_parameters():,} parameters, "
                  f"layers {kinds.describe_layers(model.cfg)}; {task.describe()}; teacher "
                  f"{cfg.teacher or 'none'}" + (f"; resuming at step {result.step}"
                                                 if result.step else ""))
    t_start = time.perf_counter()
    model.train()
    for step in range(result.step, cfg.steps):
        batch = task.batch(step)
        parts: dict[str, float] = {}

        def backward() -> float:
            loss, p = task.loss(model, batch, teacher)
            loss.backward()
            parts.update(p)
            return loss.item()

        loss, problem = optimizer_step(model, opt, step, cfg, backward)
        if problem is not None:
            result.stopped = "nan"
            result.message = (f"{problem}: training stopped; the last checkpoint "
                              f"(step {result.step}) is kept")
            break
        result.step = step + 1
        result.losses.append(loss)
        bar.update(1)
        bar.set_postfix({"loss": f"{loss:.3f}", **{k: f"{v:.3f}" for k, v in parts.items()}},
                        refresh=False)
        elapsed = time.perf_counter() - t_start
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.write({"event": "train", "step": step + 1, "loss": loss, **parts,
                       "lr": lr_at(step, cfg), "elapsed_s": elapsed})
        timed_out = cfg.time_limit is not None and elapsed > cfg.time_limit
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps \
                or timed_out:
            ev = {"step": step + 1, **task.evaluate(model)}
            result.evals.append(ev)
            log.write({"event": "eval", **ev})
        if timed_out:
            result.stopped = "time_limit"
            result.message = f"time limit of {cfg.time_limit:.0f} s reached at step {step + 1}"
        if timed_out or step + 1 == cfg.steps or (step + 1) % cfg.save_every == 0:
            save(step + 1)
        if timed_out:
            break
    bar.close()
    log.close()
    write_atomic(out / RUN_FILE, json.dumps({
        "run": run.to_dict(), "model": kinds.config_to_dict(model.cfg), "step": result.step,
        "stopped": result.stopped, "wall_s": time.perf_counter() - t_start,
        "losses": result.losses, "evals": result.evals}, indent=1))
    return result


def read_run(path: str | os.PathLike) -> PairsRunConfig:
    """A paired run config from a YAML/TOML file (sections model, train; out_dir)."""
    from seqlab.train.config import read_config_file

    return PairsRunConfig.from_dict(read_config_file(path))


__all__ = ["CONFIG_FILE", "POINTER_TASKS", "TEXT_TASKS", "PairsTask", "make_task", "PairBatch", "PairsResult", "PairsRunConfig", "PairsTrainConfig", "RUN_FILE", "TASKS",
           "batch_order", "build_model", "decoder_only_batch", "distill_kl", "encdec_batch",
           "evaluate_pairs", "load_task", "load_teacher", "make_batch", "pair_loss", "read_run",
           "scored_logits", "train_pairs"]

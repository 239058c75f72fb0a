"""The trainer: one loop for every seqlab LM.

AdamW with warm-up then cosine decay, gradient clipping and accumulation,
bfloat16 autocast where the device supports it, optional torch.compile,
periodic evaluation in bits per byte, a progress bar, JSON-lines metrics
(and TensorBoard when installed), atomic checkpoints and exact resume.
One process at a time trains in a run folder (an OS lock, ``lock.py``);
Ctrl-C or SIGTERM stops at a checkpoint (``signals.py``).

Exact resume: a batch depends only on (seed, step) (see ``Corpus.batch``),
and a checkpoint holds the model, the optimizer, the step and the random
state, so on CPU a run stopped and resumed logs the same losses as a run
that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from seqlab.config import ConfigError
from seqlab.models import kinds
from seqlab.models.io import CheckpointError, load
from seqlab.models.lm import LM, grow_vocab
from seqlab.tasks.corpus import Corpus, DataError, load_corpus
from seqlab.tokenizer import load_tokenizer
from seqlab.train import distributed as D
from seqlab.train import objectives
from seqlab.train.checkpoint import clean_leftovers, latest_checkpoint, link_latest, \
    list_checkpoints, load_resume_checkpoint, resolve_model_dir, set_aside, step_of, \
    write_checkpoint
from seqlab.train.config import RunConfig, TrainConfig, read_run_file
from seqlab.train.lock import RunLock
from seqlab.train.metrics import MetricsLog, repair_metrics
from seqlab.train.optim import lr_at, make_optimizer, optimizer_step
from seqlab.train.signals import StopFlag
from seqlab.train.sparsity import Pruner, sparsity_for_run


@dataclass
class TrainResult:
    step: int                                   # optimizer steps completed
    stopped: str                                # done | interrupted | nan | time_limit | paused
    losses: list[float] = field(default_factory=list)   # train loss of each step run here
    evals: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    message: str = ""
    signal: int | None = None                   # the signal that interrupted the run


def resolve_device(name: str, info: D.DistInfo | None = None, what: str = "train.device") -> torch.device:
    """The device ``name`` names (auto: cuda when visible); ConfigError naming ``what`` if unusable."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{what} {name!r} is not a device: expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {name!r}: no CUDA device is visible; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{what} {name!r}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        if info is not None and info.enabled and dev.index is None:
            dev = torch.device("cuda", info.local_rank)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} {name!r}: no MPS device is available; use cpu or auto")
    return dev


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "float32":
        return None
    if cfg.precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(model: LM, corpus: Corpus, seq_len: int, max_tokens: int, batch_size: int,
             device: torch.device, amp: torch.dtype | None = None,
             info: D.DistInfo = D.DistInfo(), objective: str = "clm",
             mlm_probability: float = 0.15) -> dict[str, float]:
    """Validation loss and bits per byte over fixed windows, of the targets ``objective``
    scores (every next token for clm; the masked tokens for mlm; the tokens after each row's
    prefix for prefix, with masks and prefixes fixed per window).

    Sums of per-token negative log-likelihoods and of target bytes are
    accumulated in float64 and divided once, so the result does not depend
    on ``batch_size`` (or on the number of processes).
    """
    was_training = model.training
    model.eval()
    windows = corpus.eval_windows(seq_len, max_tokens)
    ranks = torch.arange(len(windows))[info.rank::info.world]
    windows = windows[info.rank::info.world]
    token_bytes = torch.from_numpy(corpus.tokenizer.token_byte_lengths()).to(device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # nll, tokens, bytes
    t0 = time.perf_counter()
    for i in range(0, len(windows), batch_size):
        # The draws of window w depend on w alone: the figure is independent of batch_size.
        batch = objectives.cat_batches([
            objectives.make_batch(objective, windows[j:j + 1].to(device), corpus.vocab_size,
                                  seed=-1, step=int(ranks[j]), mlm_probability=mlm_probability)
            for j in range(i, min(i + batch_size, len(windows)))])
        with autocast_context(device, amp):
            logits, _ = _call(model, batch)
        y = batch.targets.reshape(-1)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y,
                              ignore_index=objectives.IGNORE, reduction="none")
        scored = y != objectives.IGNORE
        totals += torch.stack([nll.double().sum(), scored.sum().double(),
                               token_bytes[y[scored]].sum().double()])
    D.all_reduce_sum(totals, info)
    elapsed = time.perf_counter() - t0
    model.train(was_training)
    nll, tokens, n_bytes = totals.tolist()
    return {"loss": nll / tokens, "bpb": nll / (n_bytes * math.log(2)), "tokens": int(tokens),
            "tokens_per_s": tokens / max(elapsed, 1e-9) * info.world}


def _call(model, batch: objectives.Batch):
    """The model on a batch: with its mask where the objective has one (a causal call stays
    ``model(x)``, which every family accepts)."""
    if batch.prefix is None:
        return model(batch.inputs)
    return model(batch.inputs, prefix=batch.prefix)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Trains ``run.model`` on ``run.data`` as ``run.train`` says, in ``run.out_dir``.

    Example:
        >>> run = RunConfig.from_dict({"model": {"dim": 64, "layers": ["attention"]},
        ...                            "train": {"steps": 100}, "out_dir": "runs/a"})
        >>> result = Trainer(run).fit()
        >>> Trainer(run, resume=True).fit()     # continues from runs/a/latest
    """

    def __init__(self, run: RunConfig, *, resume: bool = False, progress: bool = True,
                 corpus: Corpus | None = None, model: LM | None = None):
        self.run, self.cfg = run, run.train
        self.out = Path(run.out_dir)
        self.progress = progress
        self.info = D.setup(resolve_device(self.cfg.device).type)
        self.device = resolve_device(self.cfg.device, self.info)
        self.amp = autocast_dtype(self.cfg, self.device)
        shares = self.info.world * self.cfg.grad_accum
        if self.cfg.batch_size % shares:
            raise ConfigError(f"TrainConfig.batch_size = {self.cfg.batch_size} is not allowed: expected "
                              f"a multiple of processes x grad_accum = {shares}")
        self.step, trainer_state = 0, None   # optimizer steps completed
        self.notes: list[str] = []           # what set-up had to repair, told to the user
        # The lock comes first: every check and repair below relies on no other writer.
        created = not self.out.exists()
        self._lock = RunLock.acquire(self.out) if self.info.is_main else None
        try:
            model, trainer_state, ckpt = self._set_up(run, resume, corpus, model, progress)
            self.pruner = self._make_pruner(model, trainer_state, ckpt)
        except BaseException:
            self.close()
            if created and self.info.is_main:
                _remove_if_only_lock(self.out)
            raise
        self.model = model.to(self.device)
        self.model_cfg = self.model.cfg
        if self.pruner is not None:
            self.pruner.to(self.device)
        self.opt = make_optimizer(self.model, self.cfg)
        if trainer_state is not None:
            try:
                self.opt.load_state_dict(trainer_state["optimizer"])
                torch.set_rng_state(trainer_state["rng"])
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                self.close()
                raise CheckpointError(f"{ckpt}: the trainer state does not fit the model "
                                      f"({type(e).__name__}: {e}); the checkpoint is damaged or "
                                      "of another seqlab") from None
        self.forward = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                               else None)
        if self.cfg.compile:
            self.forward = torch.compile(self.forward)

    # -- set-up helpers ----------------------------------------------------------
    def _set_up(self, run: RunConfig, resume: bool, corpus: Corpus | None, model: LM | None,
                progress: bool):
        """(model, trainer state or None, checkpoint or None); loads the corpus."""
        if run.kind == "encdec":   # before the corpus is read: a stream holds no pairs
            raise ConfigError(
                "the encdec family trains on (source, target) pairs, not on a stream of text: "
                "seqlab train configs/encdec-small.yaml runs its loop (from Python: "
                "seqlab.train.seq2seq.train_pairs)")
        if self.info.is_main:
            clean_leftovers(self.out)   # safe: the lock says their writers are dead
        ckpts = list_checkpoints(self.out)
        if ckpts and not resume:
            raise CheckpointError(
                f"{self.out} already holds a run (latest checkpoint {ckpts[-1].name}); pass --resume "
                "to continue it, or choose another --out. Nothing was overwritten.")
        ckpt = trainer_state = None
        if resume:
            # Rank 0 picks (and sets damaged ones aside) before the others look.
            if self.info.is_main:
                ckpt, model, trainer_state = self._resume_checkpoint()
            D.barrier(self.info)
            if not self.info.is_main:
                ckpt, model, trainer_state, _ = load_resume_checkpoint(self.out, self.device)
            self.step = trainer_state["step"]
            if self.step > self.cfg.steps:
                raise ConfigError(f"train.steps = {self.cfg.steps}: the run in {self.out} is "
                                  f"already at step {self.step}; give --steps above {self.step} to "
                                  "train further (its checkpoints are left as they are)")
        # The tokenizer comes from the checkpoint when resuming, from the pretrained model with
        # --init, else from the data config (bytes, or a BPE trained on the data).
        tokenizer, init_model = None, None
        if ckpt is not None:
            tokenizer = load_tokenizer(ckpt) if (ckpt / "tokenizer.json").is_file() else None
        elif run.init is not None and model is None:
            init_model, tokenizer = _load_init(run.init)
        if corpus is None:
            if self.info.is_main:
                corpus = load_corpus(run.data, progress=progress, tokenizer=tokenizer)
            D.barrier(self.info)
            if not self.info.is_main:
                corpus = load_corpus(run.data, progress=False, tokenizer=tokenizer)
        self.corpus = corpus
        if ckpt is not None:
            self._check_same_run(_read_run_config(self.out))
        elif init_model is not None:
            model = init_model
            want = corpus.vocab_size + objectives.extra_ids(self.cfg.objective)
            if model.vocab_size < want:
                # A decoder going on as an MLM encoder: one embedding row for the mask id.
                model = grow_vocab(model, want)
                self.notes.append(f"the vocabulary grew from {init_model.vocab_size} to {want} "
                                  f"ids for the {self.cfg.objective} objective's mask token")
        elif model is None:
            torch.manual_seed(self.cfg.seed)
            model = kinds.build(self._model_config())
        self._check_objective(model)
        return model, trainer_state, ckpt

    def _make_pruner(self, model: LM, trainer_state: dict | None, ckpt: Path | None) -> Pruner | None:
        """The sparsity masks: the checkpoint's when resuming, else those of step 0."""
        saved = _read_run_config(self.out).sparsity if ckpt is not None else None
        self.sparsity = sparsity_for_run(self.run.sparsity, self.cfg.steps, saved, str(self.out))
        if not self.sparsity.enabled:
            return None
        pruner = Pruner(self.sparsity, model, self.cfg.steps)
        if trainer_state is None:
            pruner.start()
        else:
            pruner.load_state_dict(trainer_state["sparsity"])
        return pruner

    def _resume_checkpoint(self):
        ckpt, model, state, skipped = load_resume_checkpoint(self.out, self.device)
        if skipped:
            for damaged in list_checkpoints(self.out):
                if step_of(damaged) > step_of(ckpt):
                    set_aside(damaged)   # kept for inspection; no longer the run's newest
            self.notes.append(f"resuming from {ckpt.name}, the newest intact checkpoint; newer ones "
                              "were damaged and are kept as checkpoints/damaged-step-N: "
                              + " | ".join(skipped))
        link_latest(self.out, ckpt)   # it may have been lost, or point at a damaged one
        return ckpt, model, state

    def _model_config(self):
        m = self.run.model
        # The data's tokenizer decides the vocabulary, plus the objective's own ids (MLM's mask).
        want = self.corpus.vocab_size + objectives.extra_ids(self.cfg.objective)
        if m.vocab_size != want:
            m = kinds.with_vocab_size(m, want)
        return m

    def _check_objective(self, model) -> None:
        """A non-causal objective needs a model with a mask per call (the LM)."""
        if self.cfg.objective != "clm" and not isinstance(model, LM):
            raise ConfigError(
                f"train.objective = {self.cfg.objective!r} needs a model with a non-causal "
                f"face (seqlab train --model lm); the {type(model).__name__} family is causal "
                "only: train it with --objective clm")

    def _check_same_run(self, saved: RunConfig) -> None:
        if saved.init != self.run.init:
            raise CheckpointError(f"the run in {self.out} started from init = {saved.init!r}, not "
                                  f"{self.run.init!r}; resume it without changing --init")
        if saved.train.objective != self.cfg.objective:
            raise CheckpointError(
                f"the run in {self.out} trains with objective {saved.train.objective!r}, not "
                f"{self.cfg.objective!r}; to go on under another objective start a new run from "
                f"it: --init {self.out} --objective {self.cfg.objective} --out NEW_FOLDER")
        if saved.init is not None:
            return  # the model is the pretrained one; its config is in the checkpoint
        want = kinds.config_to_dict(self._model_config())
        have = kinds.config_to_dict(saved.model)
        diff = [f"{k}: checkpoint {have.get(k)!r} vs requested {want.get(k)!r}"
                for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if diff:
            raise CheckpointError(f"the checkpoint in {self.out} is of another model ("
                                  + "; ".join(diff) + "); resume without model options, or use "
                                  "another --out")

    # -- the loop --------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train from the current step to ``train.steps`` (or to ``stop_at``, checkpointing there)."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            resolved = {**self.run.to_dict(), "model": kinds.config_to_dict(self.model_cfg),
                        "sparsity": self.sparsity.to_dict()}
            write_atomic(self.out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
            # Records past the step we start from are logged again below; a torn line goes.
            repair_metrics(self.out / "metrics.jsonl", self.step)
            for note in self.notes:
                print(f"seqlab train: {note}", file=sys.stderr)
            self.notes = []
        log = MetricsLog(self.out, enabled=info.is_main)
        result = TrainResult(step=self.step, stopped="done")
        tokens_per_step = cfg.batch_size * cfg.seq_len
        micro = cfg.batch_size // (info.world * cfg.grad_accum)
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and info.is_main), desc="train")
        if info.is_main and self.progress:
            tb = "on" if log.tb is not None else "off (pip install tensorboard to enable)"
            bar.write(f"model: {kinds.kind_of_config(self.model_cfg)}, "
                      f"{self.model.num_parameters():,} parameters, layers "
                      f"{kinds.describe_layers(self.model_cfg)}; device {self.device}, autocast "
                      f"{self.amp or 'off'}, processes {info.world}; {tokens_per_step:,} tokens/step; "
                      f"tensorboard {tb}")
        t_start = time.perf_counter()
        last_bpb = None
        step = self.step
        self.model.train()
        with StopFlag() as stop:
            while step < cfg.steps:
                t0 = time.perf_counter()

                def backward() -> float:
                    loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                    for m in range(cfg.grad_accum):
                        share = info.rank * cfg.grad_accum + m
                        x, y = self.corpus.batch("train", step, cfg.batch_size, cfg.seq_len,
                                                 cfg.seed,
                                                 rows=slice(share * micro, (share + 1) * micro))
                        window = torch.cat([x, y[:, -1:]], 1).to(self.device)
                        batch = objectives.make_batch(cfg.objective, window,
                                                      self.corpus.vocab_size, cfg.seed, step,
                                                      share, cfg.mlm_probability)
                        sync = m == cfg.grad_accum - 1 or not info.enabled
                        with (contextlib.nullcontext() if sync else self.forward.no_sync()):
                            with autocast_context(self.device, self.amp):
                                logits, _ = _call(self.forward, batch)
                            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                   batch.targets.reshape(-1),
                                                   ignore_index=objectives.IGNORE)
                            # A family's auxiliary loss (H-Net's ratio loss), already weighted,
                            # joins the objective; the logged loss stays the cross-entropy.
                            aux = getattr(self.model, "aux_loss", None)
                            ((loss if aux is None else loss + aux) / cfg.grad_accum).backward()
                        loss_sum += loss.detach().double()
                    return D.all_reduce_sum(loss_sum, info).item() / (cfg.grad_accum * info.world)

                loss_val, problem = optimizer_step(self.model, self.opt, step, cfg, backward,
                                                   self.pruner)
                if problem is not None:
                    ck = latest_checkpoint(self.out)
                    result.stopped = "nan"
                    result.message = (f"{problem}: training stopped. The last good "
                                      f"checkpoint is {ck if ck else '(none yet)'}; its weights are "
                                      "untouched. Try a lower train.lr or train.grad_clip.")
                    break
                step += 1
                self.step = step
                result.step = step
                result.losses.append(loss_val)
                dt = time.perf_counter() - t0
                bar.update(1)
                postfix = {"loss": f"{loss_val:.3f}", "tok/s": f"{tokens_per_step / dt:,.0f}"}
                if last_bpb is not None:
                    postfix["bpb"] = f"{last_bpb:.3f}"
                bar.set_postfix(postfix, refresh=False)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    log.write({"event": "train", "step": step, "loss": loss_val, "lr": lr_at(step - 1, cfg),
                               "tokens_per_s": tokens_per_step / dt,
                               "elapsed_s": time.perf_counter() - t_start,
                               **({"sparsity": self.pruner.sparsity()} if self.pruner else {})})
                timed_out = cfg.time_limit is not None and time.perf_counter() - t_start > cfg.time_limit
                # Every process must take the same branch below, or a collective would hang.
                timed_out, stop.requested = D.any_true([timed_out, stop.requested], info,
                                                       self.device)
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps or timed_out:
                    ev = self.evaluate()
                    last_bpb = ev["bpb"]
                    result.evals.append({"step": step, **ev})
                    log.write({"event": "eval", "step": step, **ev})
                    bar.set_postfix({**postfix, "bpb": f"{last_bpb:.3f}"}, refresh=False)
                pause = stop_at is not None and step >= stop_at
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps or timed_out \
                        or stop.requested or pause:
                    result.checkpoint = self._save(step)
                if pause:
                    result.stopped = "paused"
                    break
                if stop.requested:
                    result.stopped, result.signal = "interrupted", stop.signum
                    result.message = (f"interrupted at step {step}; checkpoint saved in "
                                      f"{result.checkpoint}. Resume with: seqlab train --resume "
                                      f"--out {self.out}")
                    break
                if timed_out:
                    result.stopped = "time_limit"
                    result.message = f"time limit of {cfg.time_limit:.0f} s reached at step {step}"
                    break
        if stop.aborted is not None:   # a second Ctrl-C or SIGTERM: stopped at once, unsaved
            ck = latest_checkpoint(self.out)
            result.stopped, result.signal, result.checkpoint = "interrupted", stop.aborted, None
            result.message = (f"interrupted twice: stopped at once at step {self.step}; the newest "
                              f"checkpoint is {ck or '(none yet)'}. Resume with: seqlab train "
                              f"--resume --out {self.out}")
        bar.close()
        log.close()
        return result

    def close(self) -> None:
        """Release the run folder's lock (also released when the process exits)."""
        if self._lock is not None:
            self._lock.release()

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.corpus, self.cfg.seq_len, self.cfg.eval_tokens,
                        self.cfg.eval_batch_size, self.device, self.amp, self.info,
                        self.cfg.objective, self.cfg.mlm_probability)

    def _save(self, step: int) -> Path | None:
        path = None
        if self.info.is_main:
            state = {"step": step, "optimizer": self.opt.state_dict(), "rng": torch.get_rng_state(),
                     "run": self.run.to_dict(),
                     "sparsity": self.pruner.state_dict() if self.pruner else {}}
            extra = _tokenizer_files(self.corpus)
            path = write_checkpoint(self.out, step, self.model, state, keep=self.cfg.keep_checkpoints,
                                    extra_files=extra)
        D.barrier(self.info)
        return path


def _tokenizer_files(corpus: Corpus) -> dict[str, Path]:
    """The tokenizer's files (none for bytes), to be copied into each checkpoint."""
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    corpus.tokenizer.save(tmp)
    return {p.name: p for p in tmp.iterdir()}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (a kill never tears it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_run_config(out: Path) -> RunConfig:
    return RunConfig.from_dict(read_run_file(out / "config.yaml"))


def _load_init(source: str):
    """(model, tokenizer) to start from: a seqlab checkpoint or run folder, else a pretrained
    source (alias, .gguf, Hugging Face folder)."""
    p = Path(source)
    if p.is_dir() and ((p / "checkpoints").is_dir() or _is_seqlab_model(p)):
        folder = resolve_model_dir(p)
        return load(folder), load_tokenizer(folder)
    from seqlab.models.pretrained import load_pretrained

    return load_pretrained(source)


def _is_seqlab_model(folder: Path) -> bool:
    import json

    try:
        return json.loads((folder / "config.json").read_bytes()).get("kind") == "lm"
    except (OSError, ValueError, AttributeError):
        return False


def _remove_if_only_lock(folder: Path) -> None:
    """Undo the folder a failed start created (it holds only the lock file)."""
    from seqlab.train.lock import LOCK_FILE

    if folder.is_dir() and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
        (folder / LOCK_FILE).unlink()
        folder.rmdir()


def train(run: RunConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) the run; see :class:`Trainer`."""
    trainer = Trainer(run, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        D.teardown(trainer.info)


__all__ = ["Trainer", "TrainResult", "evaluate", "train", "write_atomic", "DataError"]

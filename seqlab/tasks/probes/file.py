"""Bring your own data: sequence classification or regression read from a file.

``seqlab bench run --data-file PATH --task classify|regress`` sweeps mixers and widths on
the user's own labelled sequences: ``.npz``/``.npy`` arrays, CSV (also the UCR archive's
``.tsv``), MNIST's idx files or UCR/UEA ``.ts`` files (read by
:mod:`seqlab.tasks.seqfiles`, which documents each format). Each step of a sequence is a
vector of C real numbers, so the model is a :class:`~seqlab.models.series.SeriesModel`
(the LM's blocks behind a linear input projection) rather than a token model.

Splits are fixed by ``split_seed``, not by the run's seed, so every run and every cell
tests on the same sequences: ``test_fraction`` of them go to "test" and ``val_fraction``
to "val" (used by ``train.stop_at_accuracy``), stratified by class for classification
(:func:`seqlab.tasks.seqfiles.split`). With ``test_path`` (e.g. a UCR ``_TEST.ts`` beside
its ``_TRAIN.ts``) that file is the test split and val comes from the data file.

Normalisation uses training statistics only: each channel is shifted and scaled by the
mean and standard deviation of the train split's values (``normalize="channel"``;
``"none"`` keeps the values as read), and regression targets are standardised the same
way for training, while the reported ``mse``/``rmse``/``mae`` are in the file's units.

Metrics on the held-out split: ``accuracy`` (classify); ``mse``, ``rmse``, ``mae`` and
``r2`` (regress; R² = 1 - SSE / SST over the scored sequences).

Batches: ``batch("train", step, B, seed)`` samples B training sequences with replacement
(a pure function of seed and step); "val" and "test" are walked in order and wrap around
after ``num_examples(split)`` sequences, as in the digits probe. A batch holds
``inputs: (B, T, C)`` float32 (0 after each sequence's end), ``targets``: (B,) int64
class ids or (B, 1) float32 standardised targets, and ``extra["lengths"]: (B,)``.

The config also records ``data_digest``, the first 16 hex digits of the SHA-256 of the
files' bytes, filled in when the probe is built: a sweep's cell keys change when the data
change, and a cell whose recorded digest no longer matches its files fails rather than
training on other data. ``seq_len`` is the file's (the longest sequence) and cannot be
set to another length.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from seqlab.config import ConfigError, require
from seqlab.tasks import seqfiles
from seqlab.tasks.probes import register
from seqlab.tasks.probes.base import SPLIT_STREAM, Probe, ProbeBatch, ProbeConfig
from seqlab.tasks.seqfiles import SeqFileError

# Options that only some formats read; setting one for another format is a mistake worth naming.
_FORMAT_OPTIONS = {"labels_path": ("npy", "idx"), "label_column": ("csv",), "header": ("csv",),
                   "channels": ("csv",), "image_sequence": ("idx",)}


@dataclass(frozen=True)
class FileConfig(ProbeConfig):
    """Where the data are and how to read and split them.

    Attributes:
        seq_len: 0 = the file's length (the longest sequence); filled in when built.
        path: the data file (``--data-file``).
        task: "classify" (labels are classes) or "regress" (labels are numbers to predict).
        format: "auto" (from the file's first bytes and name) or one of npz, npy, csv, idx, ts.
        labels_path: npy: the labels array (required); idx: the labels file if not beside
            the images under MNIST's name.
        test_path: a file of the same format holding the test split (e.g. UCR's _TEST.ts);
            "" = ``test_fraction`` of the data file.
        label_column, header, channels: CSV: which column holds the label (first, last, a
            header name or a 0-based index), whether the first row is a header (auto, yes,
            no), and values per step.
        image_sequence: idx: an image is a sequence of "rows" or of "pixels".
        normalize: "channel" (per-channel mean/std of the train split) or "none".
        split_seed, test_fraction, val_fraction: the fixed split.
        data_digest: the files' SHA-256 (16 hex digits), filled in when built; "" = any.
    """

    seq_len: int = 0
    path: str = ""
    task: Literal["classify", "regress"] = "classify"
    format: Literal["auto", "npz", "npy", "csv", "idx", "ts"] = "auto"
    labels_path: str = ""
    test_path: str = ""
    label_column: str = "first"
    header: Literal["auto", "yes", "no"] = "auto"
    channels: int = 1
    image_sequence: Literal["rows", "pixels"] = "rows"
    normalize: Literal["channel", "none"] = "channel"
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    data_digest: str = ""

    def validate(self) -> None:
        # Not ProbeConfig's seq_len >= 2: 0 stands for "the file's length" until the file is read.
        require(self.seq_len == 0 or self.seq_len >= 1, self, "seq_len", "0 (the file's length)")
        require(self.channels >= 1, self, "channels", "an int >= 1")
        require(self.split_seed >= 0, self, "split_seed", "an int >= 0")
        require(0.0 < self.test_fraction < 1.0, self, "test_fraction", "a number in (0, 1)")
        room = 1.0 if self.test_path else 1.0 - self.test_fraction
        require(0.0 <= self.val_fraction < room, self, "val_fraction",
                f"a number in [0, {room:g})" + ("" if self.test_path else " (1 - test_fraction)"))


@dataclass(frozen=True)
class _Prepared:
    """A file's sequences made ready for batches, shared by every probe built on it."""

    x: Tensor                       # (N, T, C) float32, normalised, 0 after each end
    targets: Tensor                 # (N,) int64 class ids, or (N, 1) float32 standardised
    lengths: Tensor                 # (N,) int64
    splits: dict[str, Tensor]       # split -> int64 indices
    classes: tuple[str, ...] | None
    target_mean: float
    target_std: float
    digest: str
    name: str


def _files(cfg: FileConfig, fmt: str) -> list[Path]:
    """Every file the data come from (the digest covers them all)."""
    files = []
    for data, labels in ((cfg.path, cfg.labels_path), (cfg.test_path, "")):
        if not data:
            continue
        files.append(Path(data))
        if labels:
            files.append(Path(labels))
        elif fmt == "idx":
            beside = seqfiles.idx_labels_beside(data)
            if beside is not None:
                files.append(beside)
    return files


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")   # the reader names the problem
    return h.hexdigest()[:16]


def _stats(files: list[Path]) -> tuple:
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f), None, None))
    return tuple(out)


def _read_options(cfg: FileConfig) -> dict:
    return dict(labels_path=cfg.labels_path or None, label_column=cfg.label_column,
                header=cfg.header, channels=cfg.channels, image_sequence=cfg.image_sequence)


def _prepare(cfg: FileConfig) -> _Prepared:
    fmt = cfg.format if cfg.format != "auto" else seqfiles.detect_format(cfg.path)
    defaults = FileConfig()
    for name, formats in _FORMAT_OPTIONS.items():
        if getattr(cfg, name) != getattr(defaults, name) and fmt not in formats:
            raise ConfigError(f"FileConfig.{name} = {getattr(cfg, name)!r} does not apply to "
                              f"{cfg.path} (format {fmt}); it is an option of {', '.join(formats)} "
                              "files")
    if cfg.test_path and fmt == "npy":
        raise ConfigError(f"FileConfig.test_path = {cfg.test_path!r}: a .npy test file has no labels "
                          "of its own; save each split as an .npz (np.savez(path, x=X, y=y))")
    files = _files(cfg, fmt)
    return _prepare_cached(cfg.path, cfg.test_path, fmt, cfg.task, tuple(_read_options(cfg).items()),
                           cfg.normalize, cfg.split_seed, cfg.test_fraction, cfg.val_fraction,
                           _stats(files))


@functools.lru_cache(maxsize=4)
def _prepare_cached(path: str, test_path: str, fmt: str, task: str, options: tuple,
                    normalize: str, split_seed: int, test_fraction: float, val_fraction: float,
                    stats: tuple) -> _Prepared:
    # ``stats`` (each file with its size and mtime) is in the key so an edited file is read again.
    opts = dict(options)
    data = seqfiles.read(path, task, format=fmt, **opts)
    parts = [data]
    if test_path:
        test_fmt = seqfiles.detect_format(test_path)
        if test_fmt != fmt:
            raise SeqFileError(f"{test_path} is a {test_fmt} file but {path} is a {fmt} file; give "
                               "the test split in the data file's format")
        parts.append(seqfiles.read(test_path, task, format=fmt, **{**opts, "labels_path": None}))
        data = seqfiles.concat(parts)
    problem = next((p for p in map(seqfiles.first_missing, parts) if p), None)
    if problem:
        raise SeqFileError(f"{problem}; the file probe needs complete sequences: fill missing values "
                           "(e.g. by interpolation) or drop those sequences")
    classify = task == "classify"
    if classify and len(data.classes) < 2:
        raise SeqFileError(f"{data.source}: every sequence has the label {data.classes[0]!r}; "
                           "classification needs at least two classes")
    n_file = len(parts[0])
    if test_path:
        inner = seqfiles.split(data.y[:n_file], seed=split_seed, test_fraction=0.0,
                               val_fraction=val_fraction, stratify=classify)
        splits = {"train": inner["train"], "val": inner["val"],
                  "test": np.arange(n_file, len(data), dtype=np.int64)}
    else:
        splits = seqfiles.split(data.y, seed=split_seed, test_fraction=test_fraction,
                                val_fraction=val_fraction, stratify=classify)
    for s in ("train", "test"):
        if len(splits[s]) == 0:
            raise SeqFileError(f"{data.source} has {len(data)} sequences: too few for a {s} split "
                               f"(test_fraction = {test_fraction:g}, val_fraction = {val_fraction:g})")
    x = data.x                        # (N, T, C); this SeqData is ours alone: scaled in place
    valid = np.arange(x.shape[1])[None, :] < data.lengths[:, None]                # (N, T)
    if normalize == "channel":
        values = x[splits["train"]][valid[splits["train"]]]                      # (steps, C)
        mean = values.mean(axis=0, dtype=np.float64)
        std = values.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)    # constant: keep
        x -= mean.astype(np.float32)
        x /= std.astype(np.float32)
        x[~valid] = 0.0
    target_mean, target_std = 0.0, 1.0
    if classify:
        targets = torch.from_numpy(data.y)
    else:
        y_train = data.y[splits["train"]]
        target_mean, target_std = float(y_train.mean()), float(y_train.std())
        target_std = target_std if target_std > 0 else 1.0
        targets = torch.from_numpy((data.y - target_mean) / target_std).float()[:, None]
    return _Prepared(x=torch.from_numpy(x), targets=targets, lengths=torch.from_numpy(data.lengths),
                     splits={k: torch.from_numpy(v) for k, v in splits.items()},
                     classes=data.classes, target_mean=target_mean, target_std=target_std,
                     digest=_digest([Path(f) for f, _, _ in stats]), name=data.name)


@register("file")
class FileProbe(Probe):
    """Your own labelled sequences from a file (npz, npy, CSV, idx, .ts); classify or regress."""

    kind = "classify"   # the class default, for listings; each probe takes cfg.task
    Config = FileConfig

    def __init__(self, cfg: FileConfig | None = None, **params):
        super().__init__(cfg, **params)
        cfg = self.cfg
        if not cfg.path:
            raise ConfigError("FileConfig.path is empty: name the data file, e.g. seqlab bench run "
                              "--data-file digits.ts --task classify --mixers lstm")
        self.kind = cfg.task
        self.data = _prepare(cfg)
        if cfg.data_digest and cfg.data_digest != self.data.digest:
            raise ConfigError(f"FileConfig.data_digest = {cfg.data_digest!r} but {cfg.path} now has "
                              f"digest {self.data.digest!r}: the data changed since this cell was "
                              "set up; run the sweep again to make new cells")
        T = self.data.x.shape[1]
        if cfg.seq_len not in (0, T):
            raise ConfigError(f"FileConfig.seq_len = {cfg.seq_len} is not allowed: {cfg.path} fixes "
                              f"the length at {T} (its longest sequence); leave seq_len at 0")
        self.cfg = dataclasses.replace(cfg, seq_len=T, data_digest=self.data.digest)

    # -- what the model must be built with -------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """1: steps are real vectors, not tokens (the backbone's embedding goes unused)."""
        return 1

    @property
    def channels(self) -> int:
        """Numbers per step (C)."""
        return self.data.x.shape[2]

    @property
    def num_classes(self) -> int | None:
        return len(self.data.classes) if self.kind == "classify" else None

    @property
    def num_outputs(self) -> int:
        """Class logits (classify) or 1 target (regress) per sequence."""
        return self.num_classes if self.kind == "classify" else 1

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The label each class id stands for (classify), as the file writes it."""
        return self.data.classes

    def with_length(self, seq_len: int) -> "Probe":
        raise ValueError(f"{self.cfg.path} fixes the sequence length at {self.seq_len}; a file "
                         "probe cannot be tested at another length")

    # -- data ------------------------------------------------------------------------------------
    def split_indices(self, split: str) -> Tensor:
        """Indices of the sequences in ``split`` (fixed by ``split_seed``)."""
        if split not in SPLIT_STREAM:
            raise ValueError(f"split {split!r} is not allowed: expected one of {list(SPLIT_STREAM)}")
        return self.data.splits[split]

    def num_examples(self, split: str) -> int | None:
        """Size of "val" / "test" (walked in order); None for "train" (sampled)."""
        indices = self.split_indices(split)
        return None if split == "train" else len(indices)

    def batch(self, split: str, step: int, batch_size: int, seed: int = 0) -> ProbeBatch:
        indices = self.split_indices(split)
        if len(indices) == 0:
            raise ValueError(f"the {split} split of {self.cfg.path} is empty (val_fraction = "
                             f"{self.cfg.val_fraction:g})")
        if split == "train":
            g = self.generator(split, step, seed)
            chosen = indices[torch.randint(len(indices), (batch_size,), generator=g)]
        else:
            step = step % math.ceil(len(indices) / batch_size)  # wrap around after one pass
            chosen = indices[step * batch_size:(step + 1) * batch_size]
        d = self.data
        return ProbeBatch(d.x[chosen], d.targets[chosen], {"lengths": d.lengths[chosen]})

    # -- metric ----------------------------------------------------------------------------------
    def score(self, logits: Tensor, batch: ProbeBatch) -> dict[str, float]:
        """Classify: correct/count. Regress (``logits``: (B, 1) standardised predictions):
        squared and absolute errors in the file's units plus the sums R² needs."""
        if self.kind == "classify":
            return super().score(logits, batch)
        t = batch.targets.double()
        err = logits.double().reshape(t.shape) - t
        sse_std = float((err ** 2).sum())
        return {"sse": sse_std * self.data.target_std ** 2,
                "sae": float(err.abs().sum()) * self.data.target_std,
                "sse_std": sse_std, "sum_t": float(t.sum()), "sum_t2": float((t ** 2).sum()),
                "count": float(t.numel())}

    def metrics(self, totals: dict[str, float]) -> dict[str, float]:  # type: ignore[override]
        """``accuracy`` (classify); ``mse``, ``rmse``, ``mae``, ``r2`` (regress; r2 is left out
        when every scored target is equal)."""
        if self.kind == "classify":
            return Probe.metrics(totals)
        n = max(totals["count"], 1.0)
        out = {"mse": totals["sse"] / n, "rmse": math.sqrt(totals["sse"] / n),
               "mae": totals["sae"] / n}
        sst = totals["sum_t2"] - totals["sum_t"] ** 2 / n   # standardised: no cancellation
        if sst > 1e-12 * n:
            out["r2"] = 1.0 - totals["sse_std"] / sst
        return out

"""Training checkpoints, written so that a crash at any moment loses nothing.

Layout of a run folder::

    run/config.yaml               the resolved RunConfig
    run/metrics.jsonl             one JSON line per log/eval event
    run/checkpoints/step-000500/  model.safetensors, config.json, trainer.pt
    run/latest -> checkpoints/step-000500

A checkpoint is written into a temporary folder, flushed, then renamed into
place; only then is the ``latest`` link swapped (an atomic rename) and old
checkpoints pruned. A kill at any point leaves ``latest`` on a complete
checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from seqlab.models.io import CheckpointError, load, save
from seqlab.models.lm import LM

TRAINER_FILE = "trainer.pt"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(run_dir: Path, step: int, model: LM, trainer_state: dict[str, Any],
                     keep: int = 2, extra_files: dict[str, Path] | None = None) -> Path:
    """Write checkpoint ``step`` under ``run_dir`` and point ``latest`` at it."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".tmp-step-{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save(model, tmp)
    torch.save(trainer_state, tmp / TRAINER_FILE)
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, tmp / name)
    with open(tmp / TRAINER_FILE, "rb") as f:
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after an interrupted resume)
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = run_dir / f".latest-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(Path("checkpoints") / final.name)
    os.replace(link_tmp, run_dir / "latest")
    _fsync_dir(run_dir)
    for old in sorted(p for p in ckdir.iterdir() if p.name.startswith("step-"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    link = Path(run_dir) / "latest"
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    if not (target / TRAINER_FILE).is_file():
        raise CheckpointError(f"{link} points to {target}, which is not a complete checkpoint")
    return target


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder from a run folder (its latest checkpoint) or a checkpoint folder."""
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if (p / "latest").exists():
        return (p / "latest").resolve()
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist; give a run folder (from seqlab train) "
                              "or a checkpoint folder holding config.json and model.safetensors")
    raise CheckpointError(f"{str(p)!r} holds no checkpoint (no config.json, no 'latest' link)")


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    try:
        return torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"{ckpt / TRAINER_FILE} cannot be read ({type(e).__name__}: {e}); "
                              "the checkpoint is truncated or corrupt. Earlier checkpoints are in "
                              f"{ckpt.parent}") from None


__all__ = ["write_checkpoint", "latest_checkpoint", "resolve_model_dir", "load_trainer_state", "load"]

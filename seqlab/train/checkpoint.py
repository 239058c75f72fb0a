"""Training checkpoints, written so that a crash at any moment loses nothing.

Layout of a run folder::

    run/config.yaml               the resolved RunConfig
    run/metrics.jsonl             one JSON line per log/eval event
    run/.lock                     held by the one process training here (seqlab/train/lock.py)
    run/checkpoints/step-000500/  model.safetensors, config.json, trainer.safetensors,
                                  trainer.json, [tokenizer.json], manifest.json
    run/latest -> checkpoints/step-000500

A checkpoint is written into a temporary folder, its checksum manifest last,
flushed, then renamed into place; only then is the ``latest`` link swapped
(an atomic rename) and old checkpoints pruned. Checkpoints are ordered by the
step number in their name, never by the link, so a lost or dangling link
hides nothing, and readers verify the manifest before trusting a file.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from seqlab.integrity import check_manifest, has_manifest, write_manifest
from seqlab.models.io import CheckpointError, load, save
from seqlab.models.lm import LM
from seqlab.train.trainer_state import LEGACY, META, LegacyCheckpointError, legacy_message, \
    load_trainer_state, save_trainer_state

_STEP = re.compile(r"step-(\d+)")
_TMP_PREFIX = ".tmp-step-"
_LINK_PREFIX = ".latest-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoints/step-N`` folders of ``run_dir``, oldest first by step number."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckdir.iterdir()
             if (m := _STEP.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def step_of(ckpt: Path) -> int:
    return int(_STEP.fullmatch(ckpt.name).group(1))


def link_latest(run_dir: Path, final: Path) -> None:
    """Point ``run_dir/latest`` at checkpoint ``final`` (an atomic rename of a new link)."""
    link_tmp = run_dir / f"{_LINK_PREFIX}{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(Path("checkpoints") / final.name)
    os.replace(link_tmp, run_dir / "latest")
    _fsync_dir(run_dir)


def write_checkpoint(run_dir: Path, step: int, model: LM, trainer_state: dict[str, Any],
                     keep: int = 2, extra_files: dict[str, Path] | None = None) -> Path:
    """Write checkpoint ``step`` under ``run_dir``, point ``latest`` at it and prune.

    Pruning keeps the ``keep`` checkpoints with the highest step numbers, and always the one
    just written.
    """
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f"{_TMP_PREFIX}{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save(model, tmp)
    save_trainer_state(tmp, trainer_state)
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, tmp / name)
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    write_manifest(tmp)   # inside the folder that is renamed, so it always matches its files
    _fsync_dir(tmp)
    old = None
    if final.exists():  # re-saving the same step (e.g. after an interrupted resume)
        # Moved aside rather than deleted first, so a kill here still leaves the step on disk;
        # its .tmp-step- name makes it a leftover that the next writer cleans.
        old = ckdir / f"{_TMP_PREFIX}{step:06d}-{os.getpid()}-old"
        os.replace(final, old)
    os.replace(tmp, final)
    link_latest(run_dir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    ckpts = list_checkpoints(run_dir)
    for p in ckpts[:-keep]:
        if p != final:
            shutil.rmtree(p, ignore_errors=True)
    return final


def clean_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what dead writers left: ``checkpoints/.tmp-step-*`` folders, ``.latest-<pid>``
    links, and the temporary files of config.yaml and metrics.jsonl rewrites (``*.tmp-<pid>``).

    Call it only while holding the run's lock: then no live writer owns them.
    """
    run_dir = Path(run_dir)
    removed = []
    ckdir = run_dir / "checkpoints"
    for p in (ckdir.iterdir() if ckdir.is_dir() else ()):
        if p.name.startswith(_TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
            removed.append(p)
    for p in (run_dir.iterdir() if run_dir.is_dir() else ()):
        ours = p.name.startswith(_LINK_PREFIX) or ".tmp-" in p.name
        if ours and (p.is_symlink() or p.is_file()):
            p.unlink()
            removed.append(p)
    return removed


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step number (intact or not), or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_problems(ckpt: Path) -> list[str]:
    """What is wrong with a training checkpoint's files (empty when intact).

    Raises:
        CheckpointError: the checkpoint was written by an older seqlab (``trainer.pt``).
    """
    if not (ckpt / META).is_file() and (ckpt / LEGACY).exists():
        raise LegacyCheckpointError(legacy_message(ckpt))
    if not has_manifest(ckpt):
        return [f"{ckpt} has no checksum manifest (an interrupted write)"]
    return check_manifest(ckpt)


def load_resume_checkpoint(run_dir: Path, device) -> tuple[Path, LM, dict[str, Any], list[str]]:
    """The newest checkpoint of ``run_dir`` whose files are intact and readable, loaded.

    Returns:
        (checkpoint folder, model, trainer state, one note per newer checkpoint skipped as
        damaged, naming its damaged files).

    Raises:
        CheckpointError: no checkpoint at all, none intact (each named), or the newest is
            of an older seqlab.
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"--resume: {run_dir} holds no checkpoint to resume from")
    notes = []
    for ckpt in reversed(ckpts):
        try:
            problems = checkpoint_problems(ckpt)
            if problems:
                raise CheckpointError("; ".join(problems))
            model = load(ckpt, device=device)
            state = load_trainer_state(ckpt)
        except CheckpointError as e:
            if isinstance(e, LegacyCheckpointError) and not notes:
                raise   # the run itself is of an older seqlab: falling back would not help
            notes.append(f"{ckpt.name} is damaged: {e}")
            continue
        return ckpt, model, state, notes
    raise CheckpointError(f"--resume: no intact checkpoint in {run_dir}: " + " | ".join(notes)
                          + ". Start a fresh run with another --out")


def set_aside(ckpt: Path) -> Path:
    """Rename a damaged checkpoint to ``damaged-step-N`` (kept for inspection, no longer
    counted as a checkpoint); returns the new path."""
    dest = ckpt.with_name("damaged-" + ckpt.name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(ckpt, dest)
    return dest


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder from a run folder (its newest checkpoint by step) or a checkpoint folder.

    Raises:
        CheckpointError: nothing there, or the run's newest checkpoint is damaged (naming the
            file, and the newest intact checkpoint to use instead).
    """
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist; give a run folder (from seqlab train) "
                              "or a checkpoint folder holding config.json and model.safetensors")
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise CheckpointError(f"{str(p)!r} holds no checkpoint (no config.json, no "
                              "checkpoints/step-N folder)")
    newest = ckpts[-1]
    problems = check_manifest(newest) if has_manifest(newest) else []
    if problems:
        intact = next((c for c in reversed(ckpts[:-1])
                       if has_manifest(c) and not check_manifest(c)), None)
        hint = (f"the newest intact checkpoint is {intact}: pass it instead" if intact else
                "no other checkpoint of this run is intact")
        raise CheckpointError(f"the newest checkpoint of {p} is damaged: " + "; ".join(problems)
                              + f". Nothing was loaded; {hint}")
    return newest


__all__ = ["write_checkpoint", "link_latest", "latest_checkpoint", "list_checkpoints", "clean_leftovers",
           "load_resume_checkpoint", "resolve_model_dir", "load_trainer_state", "set_aside",
           "step_of", "load"]

"""The trainer's state in a checkpoint, as safetensors plus JSON (never a pickle).

``trainer.safetensors`` holds the tensors (optimizer moments and step counts,
the random generator's state, the sparsity masks of ``seqlab.train.sparsity``); ``trainer.json`` holds everything else (the
step, the optimizer's parameter groups, the run config) and the list of
tensor names it expects. Neither format can run code when read, unlike the
``trainer.pt`` pickle that older versions wrote, which is refused unread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqlab.errors import CheckpointError

TENSORS = "trainer.safetensors"
META = "trainer.json"
LEGACY = "trainer.pt"
FORMAT = 1
_RNG = "rng.cpu"
_STATE = "optimizer.state."   # + "<param index>.<name>", e.g. optimizer.state.3.exp_avg
_MASK = "sparsity.mask."      # + parameter name, e.g. sparsity.mask.blocks.0.mixer.rnn.weight_hh_l0


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_trainer_state(folder: str | os.PathLike, state: dict[str, Any]) -> list[str]:
    """Write ``state`` (``step``, ``optimizer`` (a state_dict), ``rng``, ``run``, optionally
    ``sparsity``: masks by parameter name) into ``folder``; both files are fsynced. Returns
    the names of the files written."""
    folder = Path(folder)
    opt = state["optimizer"]
    tensors = {_RNG: state["rng"].detach().cpu().contiguous()}
    for name, mask in (state.get("sparsity") or {}).items():
        tensors[_MASK + name] = mask.detach().cpu().contiguous()
    plain: dict[str, dict[str, Any]] = {}
    for idx, entries in opt["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                # clone: safetensors refuses tensors that share storage
                tensors[f"{_STATE}{int(idx)}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                plain.setdefault(str(int(idx)), {})[name] = value
    meta = {"format": FORMAT, "step": int(state["step"]),
            "optimizer": {"param_groups": opt["param_groups"], "plain_state": plain},
            "tensors": sorted(tensors), "run": state.get("run")}
    save_file(tensors, str(folder / TENSORS))
    (folder / META).write_text(json.dumps(meta, indent=1))
    for name in (TENSORS, META):
        _fsync(folder / name)
    return [TENSORS, META]


class LegacyCheckpointError(CheckpointError):
    """A checkpoint of an older seqlab, whose trainer state is a pickle."""


def legacy_message(folder: Path) -> str:
    return (f"{folder} was written by an older seqlab: its trainer state is {LEGACY}, a pickle, "
            "which seqlab no longer reads (unpickling a file can run any code in it), so this run "
            "cannot be resumed. Start a fresh run with another --out, or start one from these "
            f"weights: seqlab train --init {folder} --out NEW_FOLDER")


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be used ({why}); the checkpoint is damaged or was not "
                           f"written by seqlab. Earlier checkpoints are in {path.parent.parent}")


def load_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """Read what :func:`save_trainer_state` wrote: ``{"step", "optimizer", "rng", "run",
    "sparsity"}`` (``sparsity``: masks by parameter name, empty for a dense run).

    Raises:
        CheckpointError: a missing, unreadable or ill-formed file, naming it; or an older
            checkpoint holding ``trainer.pt`` (never unpickled).
    """
    folder = Path(folder)
    meta_path, tensor_path = folder / META, folder / TENSORS
    if not meta_path.is_file():
        if (folder / LEGACY).exists():
            raise LegacyCheckpointError(legacy_message(folder))
        raise CheckpointError(f"{folder} has no {META}: not a training checkpoint, or an "
                              "interrupted write")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except ValueError as e:  # bad JSON or not UTF-8
        raise _bad(meta_path, f"not JSON: {e}") from None
    try:
        if meta["format"] != FORMAT:
            raise _bad(meta_path, f"format {meta['format']!r}; this seqlab reads format {FORMAT}")
        step, groups = meta["step"], meta["optimizer"]["param_groups"]
        plain, names = meta["optimizer"]["plain_state"], meta["tensors"]
        ok = (isinstance(step, int) and step >= 0 and isinstance(groups, list)
              and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
              and isinstance(plain, dict) and isinstance(names, list))
    except (KeyError, TypeError) as e:
        raise _bad(meta_path, f"missing or ill-typed field {e}") from None
    if not ok:
        raise _bad(meta_path, "ill-typed step, param_groups or tensor list")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _bad(tensor_path, f"{type(e).__name__}: {e}") from None
    if sorted(tensors) != sorted(names) or _RNG not in tensors:
        raise _bad(tensor_path, f"holds tensors {sorted(tensors)[:4]}..., not those {META} lists")
    opt_state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in plain.items():
            opt_state.setdefault(int(key), {}).update(value)
        for key, t in tensors.items():
            if key.startswith(_STATE):
                idx, name = key[len(_STATE):].split(".", 1)
                opt_state.setdefault(int(idx), {})[name] = t
    except (ValueError, TypeError, AttributeError) as e:
        raise _bad(tensor_path, f"ill-formed optimizer state: {e}") from None
    # JSON turns tuples (e.g. AdamW's betas) into lists; the optimizer expects them back.
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in groups]
    masks = {k[len(_MASK):]: t for k, t in tensors.items() if k.startswith(_MASK)}
    return {"step": step, "optimizer": {"state": opt_state, "param_groups": groups},
            "rng": tensors[_RNG], "run": meta.get("run"), "sparsity": masks}


__all__ = ["TENSORS", "META", "LEGACY", "LegacyCheckpointError", "save_trainer_state",
           "load_trainer_state", "legacy_message"]

"""Save and load models: weights as safetensors, the config beside them as JSON.

Both files are written to temporary names and renamed into place, so a crash
mid-save leaves any earlier checkpoint in the folder intact. A checksum
manifest (``seqlab/integrity.py``) is written last; :func:`load` verifies it
when present and refuses non-finite weights, so a damaged file is named
instead of silently evaluating to NaN.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from seqlab.config import ConfigError
from seqlab.errors import CheckpointError
from seqlab.files import read_text
from seqlab.integrity import MANIFEST, check_manifest, has_manifest, write_manifest
from seqlab.models.lm import LM, LMConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` (any family in ``seqlab.models.kinds.MODELS``) to folder ``path``
    (created if needed); returns the folder."""
    from seqlab.models.kinds import kind_of

    return write_folder(model, path, kind_of(model))


def write_folder(model: torch.nn.Module, path: str | os.PathLike, kind: str) -> Path:
    """Weights (safetensors) and ``{"kind": kind, "config": model.cfg}`` (JSON) into folder
    ``path``: each written to a temporary file, fsynced, then renamed into place, so an
    interrupted save never leaves a half-written file under the real name. The checksum
    manifest goes last; an old one is removed first so that it never describes a mix of old
    and new files."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    tmp_w, tmp_c = path / (WEIGHTS + ".tmp"), path / (CONFIG + ".tmp")
    save_model(model, str(tmp_w))
    tmp_c.write_text(json.dumps({"kind": kind, "config": model.cfg.to_dict()}, indent=2))
    for tmp in (tmp_w, tmp_c):
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp_w, path / WEIGHTS)
    os.replace(tmp_c, path / CONFIG)
    write_manifest(path, [WEIGHTS, CONFIG])
    return path


def verify_folder(path: str | os.PathLike) -> None:
    """Check ``path`` against its checksum manifest (folders saved without one pass).

    Raises:
        CheckpointError: naming each damaged or missing file.
    """
    if has_manifest(path):
        problems = check_manifest(path)
        if problems:
            raise CheckpointError("damaged checkpoint: " + "; ".join(problems) + ". Use an "
                                  "earlier checkpoint or a backup copy; nothing was loaded")


def load_config(path: str | os.PathLike):
    """The config saved in checkpoint folder ``path``, of its model family (``"kind"``; files
    written before families had one are LMs)."""
    from seqlab.models.kinds import MODELS

    path = Path(path)
    cfg_file = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (expected a folder holding "
                              f"{CONFIG} and {WEIGHTS})")
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG}: not a seqlab checkpoint, or an "
                              "interrupted save")
    text = read_text(cfg_file, CheckpointError, "restore it from a copy or retrain")
    try:
        data = json.loads(text)
        kind = data.get("kind", "lm")
        config = data["config"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ValueError: bad JSON
        raise CheckpointError(f"{cfg_file} is corrupt ({e}); restore it from a copy or retrain")
    if kind not in MODELS:
        hint = (" (load it with seqlab.models.classifier.load_classifier)"
                if kind == "classifier" else "")
        raise CheckpointError(f"{cfg_file} holds a model of kind {kind!r}{hint}; "
                              f"seqlab.models.load reads: {', '.join(MODELS)}")
    try:
        return MODELS[kind][0].from_dict(config)
    except ConfigError as e:
        raise CheckpointError(f"{cfg_file} holds an invalid config: {e}")
    except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON
        raise CheckpointError(f"{cfg_file} is corrupt ({e}); restore it from a copy or retrain")


def check_shapes(model: LM, weights: Path) -> None:
    """CheckpointError naming the first tensor whose saved shape is not the config's."""
    try:
        with safe_open(str(weights), "pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt")
    # Every family's config names its stacks (layer_groups), so the message fits them all.
    shape = ", ".join(f"{'' if group == 'layers' else group + ' '}dim {dim}, {len(layers)} layers"
                      for group, (dim, layers) in model.cfg.layer_groups().items())
    for name, t in model.state_dict().items():
        if name in saved and saved[name] != tuple(t.shape):
            raise CheckpointError(
                f"the weights in {weights} do not match {CONFIG} beside them: {name} is "
                f"{list(saved[name])} in the weights but {list(t.shape)} by the config "
                f"({shape}); {CONFIG} was edited or belongs to another model: restore the one "
                "saved with these weights")


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu",
         dtype: torch.dtype | None = None) -> LM:
    """Load a model saved by :func:`save`.

    Raises:
        CheckpointError: the folder, config or weights are missing, corrupt,
            truncated, do not match the config or the checksum manifest, or hold
            non-finite values.
    """
    from seqlab.models.kinds import MODELS

    verify_folder(path)
    cfg = load_config(path)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS}")
    model = next(cls for cfg_cls, cls in MODELS.values() if type(cfg) is cfg_cls)(cfg)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        check_shapes(model, weights)   # a config that disagrees is named as such, not "corrupt"
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt")
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match its config: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}")
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{weights} holds non-finite values (NaN or inf) in {name!r}: the "
                                  "file is corrupt or was saved from a diverged model; use an "
                                  "earlier checkpoint")
    model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model

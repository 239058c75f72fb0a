"""Sequence classification: the decoder LM's backbone plus a linear head over classes.

The backbone is an :class:`~seqlab.models.lm.LM` built from the same
:class:`~seqlab.models.lm.LMConfig` (any layer pattern, any mixer); its
``features`` (hidden states after the final norm) are pooled to one vector
per sequence and a linear layer maps that to ``num_classes`` logits.

Pooling ``"last"`` reads the last position, which has seen the whole
sequence in a causal model; ``"mean"`` averages every position. The LM's own
vocabulary head is not used (with tied embeddings it costs no parameters).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import Tensor, nn

from seqlab.config import Config, ConfigError, require
from seqlab.errors import CheckpointError
from seqlab.models.io import CONFIG, WEIGHTS, write_folder
from seqlab.models.lm import LM, LMConfig


@dataclass(frozen=True)
class ClassifierConfig(Config):
    """Options of a sequence classifier.

    Attributes:
        backbone: the LM whose blocks read the sequence (its vocab_size is the input vocabulary).
        num_classes: number of labels.
        pooling: "last" (the last position; right for causal backbones) or "mean".
    """

    backbone: LMConfig = field(default_factory=LMConfig)
    num_classes: int = 2
    pooling: Literal["last", "mean"] = "last"

    def validate(self) -> None:
        require(self.num_classes >= 2, self, "num_classes", "an int >= 2")


class SequenceClassifier(nn.Module):
    """``tokens: (B, T)`` -> ``logits: (B, num_classes)``.

    Example:
        >>> cfg = ClassifierConfig(backbone=LMConfig(vocab_size=16, dim=32, layers=("attention",)),
        ...                        num_classes=3)
        >>> model = SequenceClassifier(cfg)
        >>> model(torch.randint(0, 16, (4, 10))).shape
        torch.Size([4, 3])
    """

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = LM(cfg.backbone)
        self.classifier = nn.Linear(cfg.backbone.dim, cfg.num_classes)
        nn.init.normal_(self.classifier.weight, std=cfg.backbone.init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` for ``tokens: (B, T)`` int64.

        Raises:
            ValueError: tokens of the wrong rank, dtype or range (from the backbone).
        """
        hidden, _ = self.backbone.features(tokens)         # (B, T, D)
        return self.classifier(self.pool(hidden))

    def pool(self, hidden: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, D)`` as ``cfg.pooling`` says."""
        return hidden[:, -1] if self.cfg.pooling == "last" else hidden.mean(dim=1)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters that take part in classification (an untied LM head does not)."""
        unused = set() if self.cfg.backbone.tie_embeddings else {id(self.backbone.head.weight)}
        seen = {id(p): p for p in self.parameters() if id(p) not in unused}
        n = sum(p.numel() for p in seen.values())
        if exclude_embeddings:
            n -= self.backbone.embed.weight.numel()
        return n

    def state_bytes(self, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the backbone's recurrent state per sequence after ``seq_len`` tokens."""
        return self.backbone.state_bytes(seq_len, dtype)


def save_classifier(model: SequenceClassifier, path: str | os.PathLike) -> Path:
    """Write ``model`` to folder ``path`` as safetensors + JSON config (atomic renames)."""
    return write_folder(model, path, "classifier")


def load_classifier(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> SequenceClassifier:
    """Load a model written by :func:`save_classifier`.

    Raises:
        CheckpointError: the folder, config or weights are missing, corrupt, of another
            kind of model, or do not match the config.
    """
    path = Path(path)
    cfg_file, weights = path / CONFIG, path / WEIGHTS
    if not cfg_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{path} is not a classifier checkpoint (expected {CONFIG} and {WEIGHTS})")
    try:
        data = json.loads(cfg_file.read_text())
        kind, cfg = data["kind"], data["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_file} is corrupt ({e}); restore it from a copy or retrain")
    if kind != "classifier":
        raise CheckpointError(f"{path} holds a {kind!r} model, not a classifier; load it with "
                              "seqlab.models.load")
    try:
        model = SequenceClassifier(ClassifierConfig.from_dict(cfg))
    except ConfigError as e:
        raise CheckpointError(f"{cfg_file} holds an invalid config: {e}")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt")
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match its config: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    return model.to(device)

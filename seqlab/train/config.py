"""The run configuration: model + data + training options, one validated object.

Files (YAML or TOML) and command-line flags both become a plain dict,
``--set section.field=value`` overrides are applied to that dict, and
``RunConfig.from_dict`` validates the result (an unknown key or a bad value
names the field, the value and what is allowed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published separately before 3.11
    import tomli as tomllib

from seqlab.config import Config, ConfigError, require
from seqlab.errors import CheckpointError
from seqlab.files import read_text
from seqlab.models import kinds
from seqlab.models.lm import LMConfig
from seqlab.models.pattern import split_patterns
from seqlab.tasks.corpus import DataConfig
from seqlab.train.objectives import OBJECTIVES
from seqlab.train.optim import OptimizerConfig
from seqlab.train.sparsity import SparsityConfig


@dataclass(frozen=True)
class TrainConfig(OptimizerConfig):
    """Optimisation, evaluation and checkpointing options; the optimizer's and schedule's
    fields (steps, lr, warmup, ...) are ``seqlab.train.optim.OptimizerConfig``'s.

    ``batch_size`` is the global number of sequences per optimizer step,
    split across ``grad_accum`` micro-batches and across processes.
    """

    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    compile: bool = False
    eval_every: int = 200           # 0: only at the end
    eval_tokens: int = 65536
    eval_batch_size: int = 16
    ckpt_every: int = 500           # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"            # auto, cpu, cuda, cuda:1, ...
    time_limit: float | None = None  # seconds; stop (and checkpoint) when reached
    objective: str = "clm"          # clm | mlm | prefix (seqlab.train.objectives)
    mlm_probability: float = 0.15   # share of positions an MLM step predicts

    def validate(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_tokens",
                     "eval_batch_size", "keep_checkpoints", "log_every"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        for name in ("warmup", "eval_every", "ckpt_every", "seed"):
            require(getattr(self, name) >= 0, self, name, "an int >= 0")
        require(self.batch_size % self.grad_accum == 0, self, "batch_size",
                f"a multiple of grad_accum = {self.grad_accum}")
        super().validate()
        require(self.time_limit is None or self.time_limit > 0, self, "time_limit",
                "a positive number of seconds or None")
        require(self.objective in OBJECTIVES, self, "objective", " | ".join(OBJECTIVES))
        require(0 < self.mlm_probability < 1, self, "mlm_probability", "a share in (0, 1)")
        require(self.objective != "prefix" or self.seq_len >= 2, self, "seq_len",
                "at least 2 for the prefix objective (a prefix and a target)")


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything a training run needs; written beside its checkpoints."""

    # Any family of seqlab.models.kinds.MODELS; in plain data its "kind" key names it ("lm").
    model: Config = field(default_factory=LMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)   # off unless target > 0
    out_dir: str = "runs/default"
    init: str | None = None   # weights to start from: alias, .gguf, HF folder, seqlab checkpoint

    def __post_init__(self) -> None:
        if not isinstance(self.model, Config):
            object.__setattr__(self, "model", kinds.config_from_dict(self.model))
        kinds.kind_of_config(self.model)   # a registered family, or a TypeError (a bug)
        super().__post_init__()

    @property
    def kind(self) -> str:
        """The model family, e.g. "lm" or "block"."""
        return kinds.kind_of_config(self.model)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "model": kinds.config_to_dict(self.model)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) run configuration into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = read_text(path, ConfigError, "save it as UTF-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {str(path)!r}: use a .yaml, .yml or .toml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {str(path)!r} cannot be parsed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping with sections "
                          "model, data, train")
    return data


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The resolved config a run folder keeps in ``config.yaml``, as plain data.

    Raises:
        CheckpointError: the file is missing, not UTF-8, not YAML or not a mapping.
    """
    path = Path(path)
    fix = "restore it, or start a fresh run with another --out"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run's config is needed to resume; start "
                              "a fresh run with another --out")
    try:
        data = yaml.safe_load(read_text(path, CheckpointError, fix))
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path} is not a valid run config (not YAML: "
                              f"{str(e).splitlines()[0]}); {fix}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a valid run config (it holds a "
                              f"{type(data).__name__}, not a mapping of sections); {fix}")
    return data


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true, lists), a comma list, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if text.lower() in ("none", "null"):
        return None
    parts = split_patterns(text)   # commas inside parentheses belong to a layer's options
    if len(parts) > 1:
        return [parse_value(p) for p in parts]
    return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.field=value, e.g. train.lr=3e-4")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(value.strip())
    return out

"""What a sweep runs: one validated config per cell, and the model each cell trains.

A sweep is probe x mixer x dim x train length x learning rate x sparsity x seed (zoology
style: a function returning a list of configs). A cell's config is the whole recipe:
its canonical JSON is the key under which its result is stored, so a
re-run skips exactly the cells whose recipe has not changed.

A cell's mixer is a layer pattern in the syntax of :mod:`seqlab.models.pattern`
(the one ``seqlab train --mixers`` and config files use): one registered mixer
(``attention``), layers joined by ``+`` (``mamba+attention``), per-layer options
(``attention(window=64)+attention``), ``*N`` repeats, or the preset ``hybrid``,
short for ``mamba+attention``: recurrent layers first, attention after,
alternating. The pattern repeats up to the cell's layer count.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from torch import nn

from seqlab.bench.fit import ProbeTrainConfig
from seqlab.bench.results import recipe_key
from seqlab.config import Config, ConfigError, require
from seqlab.models.classifier import ClassifierConfig, SequenceClassifier
from seqlab.models.lm import LM, LMConfig
from seqlab.models.pattern import LayerSpec, format_pattern, parse_layers, repeat_to
from seqlab.models.series import SeriesConfig, SeriesModel
from seqlab.tasks import probes
from seqlab.tasks.probes import Probe
from seqlab.tasks.probes.file import FileProbe
from seqlab.train.sparsity import Pruner, SparsityConfig

_SET_BY_SWEEP = ("vocab_size", "dim", "layers")   # LMConfig fields a cell decides


def layer_pattern(spec: str) -> tuple[LayerSpec, ...]:
    """The layers of one period of ``spec`` ("attention", "mamba+attention(window=8)", "hybrid").

    Raises:
        ConfigError: bad pattern syntax, an unknown mixer or option (named with the layer).
    """
    return parse_layers(spec, "CellConfig.mixer")


@dataclass(frozen=True)
class CellConfig(Config):
    """One model trained on one probe with one seed.

    Attributes:
        probe: registered probe name; ``probe_params`` are its config fields
            (``seq_len`` is the training length).
        mixer: a mixer spec (see the module docstring); ``layers`` layers repeat it.
        model: further LMConfig fields (``mixer_options``, ``mlp_hidden``, ...).
        eval_lengths: test lengths besides the trained one (length extrapolation).
    """

    probe: str
    mixer: str
    dim: int
    layers: int = 2
    seed: int = 0
    probe_params: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)
    eval_lengths: tuple[int, ...] = ()

    def validate(self) -> None:
        require(self.dim > 0, self, "dim", "a positive int")
        require(self.seed >= 0, self, "seed", "an int >= 0")
        require(all(n >= 2 for n in self.eval_lengths), self, "eval_lengths", "ints >= 2")
        pattern = layer_pattern(self.mixer)
        require(self.layers >= len(pattern), self, "layers",
                f"at least {len(pattern)}, the length of the pattern {format_pattern(pattern)}")
        taken = sorted(set(self.model) & set(_SET_BY_SWEEP))
        if taken:
            raise ConfigError(f"model options {taken} are set by the sweep (--mixers, --dims, "
                              "--layers and the probe's vocabulary); remove them from --set")

    @property
    def key(self) -> str:
        """A short, stable digest of the whole recipe."""
        return recipe_key(self.to_dict())

    @property
    def label(self) -> str:
        sparse = self.train.sparsity
        extra = f" sparsity={sparse.target:g} ({sparse.method})" if sparse.enabled else ""
        return (f"{self.mixer} d={self.dim} L={self.build_probe().seq_len} lr={self.train.lr:g} "
                f"seed={self.seed}{extra}")

    def build_probe(self) -> Probe:
        return probes.build(self.probe, **self.probe_params)

    def lm_config(self, probe: Probe) -> LMConfig:
        pattern = layer_pattern(self.mixer)
        layers = repeat_to(pattern, self.layers)
        options = _model_options_for(self.model, pattern)
        return LMConfig.from_dict({**options, "vocab_size": probe.vocab_size, "dim": self.dim,
                                   "layers": layers})


def _model_options_for(model: dict, pattern: tuple[LayerSpec, ...]) -> dict:
    """``model`` without the options of mixers the pattern does not use.

    One ``--set model.mixer_options.attention.heads=1`` must neither break the
    cells without attention nor change their keys (and so re-run them).
    """
    options = dict(model)
    given = options.pop("mixer_options", {})
    if not isinstance(given, dict):
        return model  # LMConfig names the problem
    names = {spec.mixer for spec in pattern}
    used = {k: v for k, v in given.items() if k in names}
    return {**options, "mixer_options": used} if used else options


def build_model(cell: CellConfig, probe: Probe) -> nn.Module:
    """An LM (probe kind "lm"), a SequenceClassifier (kind "classify"), or for a file probe
    (real-valued steps; classify or regress) a SeriesModel, for ``cell``."""
    lm_cfg = cell.lm_config(probe)
    if probe.kind == "lm":
        return LM(lm_cfg)
    if isinstance(probe, FileProbe):
        return SeriesModel(SeriesConfig(backbone=lm_cfg, channels=probe.channels,
                                        outputs=probe.num_outputs))
    if probe.num_classes is None:
        raise ConfigError(f"probe {probe.name!r} is of kind 'classify' but has no num_classes")
    return SequenceClassifier(ClassifierConfig(backbone=lm_cfg, num_classes=probe.num_classes))


@dataclass(frozen=True)
class SweepConfig(Config):
    """The grid of a sweep; :meth:`cells` expands it.

    ``train_lengths`` empty means the probe's own ``seq_len`` (from its
    defaults or ``probe_params``); ``lrs`` empty means ``train.lr``. With several
    learning rates the report keeps each cell's best, as Zoology does: a mixer
    is judged at the learning rate that suits it. ``sparsities`` are targets of
    ``train.sparsity`` (one cell each; 0 is the dense cell); empty means its own.
    """

    probe: str
    mixers: tuple[str, ...]
    dims: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    train_lengths: tuple[int, ...] = ()
    test_lengths: tuple[int, ...] = ()
    lrs: tuple[float, ...] = ()
    sparsities: tuple[float, ...] = ()
    layers: int = 2
    probe_params: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)

    def validate(self) -> None:
        require(len(self.mixers) > 0, self, "mixers", "at least one mixer spec")
        require(len(self.dims) > 0 and all(d > 0 for d in self.dims), self, "dims",
                "one or more positive ints")
        require(len(self.seeds) > 0 and all(s >= 0 for s in self.seeds), self, "seeds",
                "one or more ints >= 0")
        require(all(n >= 2 for n in self.train_lengths), self, "train_lengths", "ints >= 2")
        require(all(n >= 2 for n in self.test_lengths), self, "test_lengths", "ints >= 2")
        require(all(lr > 0 for lr in self.lrs), self, "lrs", "positive numbers")
        require(all(0 <= s < 1 for s in self.sparsities), self, "sparsities", "fractions in [0, 1)")
        probes.get(self.probe)  # names the known probes when this one is not

    def cells(self) -> list[CellConfig]:
        """Every cell, mixer-major (the order the sweep runs them in)."""
        lengths = self.train_lengths or (None,)
        out = []
        for mixer in self.mixers:
            for dim in self.dims:
                for length in lengths:
                    params = dict(self.probe_params)
                    if length is not None:
                        params["seq_len"] = length
                    # The resolved config, defaults included, so the cell key names the whole task.
                    params = probes.build(self.probe, **params).cfg.to_dict()
                    for lr in self.lrs or (self.train.lr,):
                        for sparsity in self._sparsities():
                            train = dataclasses.replace(self.train, lr=lr, sparsity=sparsity)
                            for seed in self.seeds:
                                out.append(CellConfig(
                                    probe=self.probe, mixer=mixer, dim=dim, layers=self.layers,
                                    seed=seed, probe_params=params, train=train,
                                    eval_lengths=self.test_lengths,
                                    model=_model_options_for(self.model, layer_pattern(mixer))))
        return out

    def _sparsities(self) -> list[SparsityConfig]:
        base = self.train.sparsity
        return [dataclasses.replace(base, target=t) for t in self.sparsities] or [base]


def check_cells(cells: list[CellConfig]) -> None:
    """Build every distinct probe and model once, so that a bad option fails before training.

    Raises:
        ConfigError: naming the cell and the problem.
    """
    seen = set()
    for cell in cells:
        sig = json.dumps({**cell.to_dict(), "seed": 0}, sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            probe = cell.build_probe()
            model = build_model(cell, probe)
            if cell.train.sparsity.enabled:
                Pruner(cell.train.sparsity, model, cell.train.steps)   # the matrices and graphs fit
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"cell {cell.mixer} d={cell.dim}: {e}") from None
        if probe.kind == "regress" and cell.train.stop_at_accuracy > 0:
            raise ConfigError(f"ProbeTrainConfig.stop_at_accuracy = {cell.train.stop_at_accuracy:g} "
                              "needs an accuracy, and a regression reports mse and r2; leave it at 0")

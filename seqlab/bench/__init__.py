"""Probe sweeps and their reports: train every cell of probe x mixer x dim x length x seed,
append one JSON line per cell, render markdown tables and matplotlib plots.

Example:
    >>> from seqlab.bench import SweepConfig, run_sweep, write_report
    >>> run_sweep(SweepConfig(probe="mqar", mixers=("attention", "hybrid"), dims=(32, 64)),
    ...           "runs/bench/mqar.jsonl")
    >>> write_report("runs/bench/mqar.jsonl")
"""

from seqlab.bench.fit import (FitResult, ProbeTrainConfig, evaluate_probe, fit_probe, probe_loss,
                              scored_logits)
from seqlab.bench.report import write_report
from seqlab.bench.results import BenchError, read_results
from seqlab.bench.run import SweepSummary, run_cell, run_sweep
from seqlab.bench.sweep import CellConfig, SweepConfig, build_model, layer_pattern

__all__ = ["BenchError", "CellConfig", "FitResult", "ProbeTrainConfig", "SweepConfig", "SweepSummary",
           "build_model", "evaluate_probe", "fit_probe", "layer_pattern", "probe_loss", "read_results",
           "run_cell", "run_sweep", "scored_logits", "write_report"]

"""Run a sweep: train and evaluate every cell, append one JSON line per cell.

Each line holds the cell's config and key, its status ("ok", "nan" when
training diverged, "error" when something raised), accuracy (every metric
of the probe) at the trained length and at each test length, the final train
loss, wall time, parameter count and state bytes. A re-run with the same
results file skips every cell whose key is already there with status ok or
nan; cells that raised run again, and so do cells that a time limit stopped
(status "time-limit": their partial training is recorded, not evaluated).

Example:
    >>> sweep = SweepConfig(probe="mqar", mixers=("attention", "mamba"), dims=(32, 64))
    >>> summary = run_sweep(sweep, "runs/bench/mqar.jsonl")
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from seqlab.bench.default_changes import CHANGES
from seqlab.bench.fit import evaluate_probe, fit_probe
from seqlab.bench.results import BenchError, append_record, check_results_file, read_results
from seqlab.bench.sweep import CellConfig, SweepConfig, build_model, check_cells
from seqlab.config import ConfigError
from seqlab.train.trainer import autocast_dtype, resolve_device


@dataclass
class SweepSummary:
    results: Path
    ran: list[dict] = field(default_factory=list)    # records written by this call
    skipped: int = 0                                  # cells already finished in the file
    not_started: int = 0                              # cells left when the time limit came

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.ran if r["status"] != "ok"]


def run_cell(cell: CellConfig, *, device: str | torch.device = "cpu", on_step=None,
             deadline: float | None = None) -> dict:
    """Train and evaluate one cell; returns its record (never raises for a failed cell).

    ``deadline`` (``time.monotonic()`` seconds): training stops at the first step past it,
    and the record gets status "time-limit" with the steps done and no evaluation.
    """
    t_start = time.perf_counter()
    stopped_at: list[int] = []

    def step_hook(step: int, loss: float) -> bool:
        if on_step is not None:
            on_step(step, loss)
        if deadline is not None and step < cell.train.steps and time.monotonic() >= deadline:
            stopped_at.append(step)
            return True
        return False

    probe = cell.build_probe()
    trained_len = probe.seq_len
    record = {"key": cell.key, "probe": cell.probe, "mixer": cell.mixer, "dim": cell.dim,
              "layers": cell.layers, "seed": cell.seed, "seq_len": trained_len,
              "status": "ok", "message": "", "metrics": {}, "by_length": [],
              "config": cell.to_dict(),
              # the defaults this version runs: later changes are pinned when it is read
              "changes_known": len(CHANGES)}
    try:
        device = torch.device(device)
        torch.manual_seed(cell.seed)
        model = build_model(cell, probe).to(device)
        record["params"] = model.num_parameters()
        record["state_bytes"] = model.state_bytes(trained_len)
        fit = fit_probe(model, probe, cell.train, seed=cell.seed, device=device, on_step=step_hook)
        record.update(steps=fit.steps, train_s=fit.train_s,
                      final_loss=fit.losses[-1] if fit.losses else None,
                      checks=fit.checks, reached_at=fit.reached_at)
        if fit.sparsity is not None:   # realised: a random graph's density moves in steps
            record["sparsity"] = fit.sparsity
        if fit.status != "ok":
            record.update(status=fit.status, message=fit.message)
        elif stopped_at:
            record.update(status="time-limit",
                          message=f"stopped by the time limit at step {stopped_at[0]} of "
                                  f"{cell.train.steps}; the same command runs it again in full")
        else:
            amp = autocast_dtype(cell.train, device)
            t_eval = time.perf_counter()
            for length in dict.fromkeys((trained_len, *cell.eval_lengths)):
                entry = {"seq_len": length, "state_bytes": model.state_bytes(length)}
                try:
                    at = probe if length == trained_len else probe.with_length(length)
                except (ConfigError, ValueError) as e:   # e.g. too short for the probe's layout
                    record["by_length"].append({**entry, "error": str(e)})
                    continue
                # A finite test split (digits, a data file) is scored whole, each sequence once.
                n = at.num_examples("test")
                batches = cell.train.eval_batches if n is None else -(-n // cell.train.eval_batch_size)
                entry.update(evaluate_probe(model, at, batches=batches,
                                            batch_size=cell.train.eval_batch_size, seed=cell.seed,
                                            device=device, amp=amp))
                record["by_length"].append(entry)
            record["metrics"] = {k: v for k, v in record["by_length"][0].items()
                                 if k not in ("seq_len", "state_bytes")}
            record["eval_s"] = time.perf_counter() - t_eval
    except Exception as e:  # one broken cell must not lose the rest of a long sweep
        record.update(status="error", message=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=-3))
    record.update(wall_s=time.perf_counter() - t_start, device=str(device),
                  torch=torch.__version__, machine=platform.machine(), time=time.time())
    return record


def run_sweep(sweep: SweepConfig, results: str | Path, *, device: str = "auto", progress: bool = True,
              command: str | None = None, time_limit: float | None = None) -> SweepSummary:
    """Run every cell of ``sweep`` not yet finished in ``results``; append their records.

    Args:
        device: auto, cpu, cuda, cuda:N.
        progress: a progress bar over the training steps of the whole sweep, and one line
            per finished cell.
        command: the command line that made the sweep, stored in each record.
        time_limit: seconds for the whole call: no cell starts after it, and the cell
            training when it passes stops there (status "time-limit"). Both run again in
            full with the same command, like every unfinished cell.

    Raises:
        ConfigError: a bad probe, mixer or option, before any cell trains.
        BenchError: ``results`` is not a results file or cannot be written (checked before
            any cell trains), or an append failed (the record is in the message).
    """
    results = Path(results)
    cells = sweep.cells()
    check_cells(cells)
    check_results_file(results)
    dev = resolve_device(device)
    done = read_results(results).finished_keys()
    todo = [c for c in cells if c.key not in done]
    summary = SweepSummary(results=results, skipped=len(cells) - len(todo))
    bar = tqdm(total=sum(c.train.steps for c in todo), unit="step", dynamic_ncols=True,
               disable=not progress, desc=f"bench {sweep.probe}")
    if progress and summary.skipped:
        bar.write(f"{summary.skipped} of {len(cells)} cells already finished in {results}; skipping them")
    deadline = None if time_limit is None else time.monotonic() + time_limit
    for i, cell in enumerate(todo):
        if deadline is not None and time.monotonic() >= deadline:
            summary.not_started = len(todo) - i
            break
        label = cell.label
        done_before = bar.n

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix({"cell": f"{i + 1}/{len(todo)} {label}", "loss": f"{loss:.3f}"},
                            refresh=False)

        record = run_cell(cell, device=dev, on_step=on_step, deadline=deadline)
        bar.update(done_before + cell.train.steps - bar.n)   # a cell that stopped early
        if command:
            record["command"] = command
        try:
            append_record(results, record)
        except OSError as e:   # e.g. the disk filled up: give the user the record at least
            raise BenchError(f"cannot append to {results} ({e}); the cell's record was: "
                             f"{json.dumps(record)}") from None
        summary.ran.append(record)
        if progress:
            bar.write(_cell_line(record, label))
    bar.close()
    return summary


def _cell_line(record: dict, label: str) -> str:
    if record["status"] != "ok":
        return f"{label}: {record['status'].upper()} - {record['message']}"
    metric = "accuracy" if "accuracy" in record["metrics"] else "r2"   # r2: a regression probe
    accs = ", ".join(f"L={e['seq_len']}: {e[metric]:.3f}" if metric in e
                     else f"L={e['seq_len']}: -" for e in record["by_length"])
    return f"{label}: {metric} {accs} ({record['wall_s']:.1f} s)"

"""Render a results file: a markdown table (one row per cell) and PNG plots per probe.

Plots, per probe: accuracy at the trained length against model dimension,
one line per mixer (a panel per training length), or a bar per mixer when
the sweep has one width and length (none for one width trained at several
lengths: the length plot shows it); and, when cells were tested at several
lengths, accuracy against test length, one line per mixer (a panel per
dimension). Where a cell was trained
at several learning rates the plots use its best one (the table shows all,
the best marked). Points average the seeds; with several seeds a bar spans
their min and max, and a second table gives the mean ± standard deviation
over seeds. A regression (a file probe with ``--task regress``) is shown by R²
in place of accuracy, with its MSE in the table. Matplotlib draws through
its Agg canvas directly, so no global backend is switched and no display is
needed.

Example:
    >>> files = write_report("runs/bench/mqar.jsonl", "runs/bench/mqar-report")
    >>> files.markdown, files.plots
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.bench.results import BenchError, read_results, without_later_options
from seqlab.files import make_folder


@dataclass
class ReportFiles:
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)


def _accuracy_at(record: dict, length: int, metric: str = "accuracy") -> float | None:
    for e in record.get("by_length", []):
        if e.get("seq_len") == length and metric in e:
            return e[metric]
    return None


def headline(records: list[dict]) -> str:
    """The metric tables and plots lead with: ``accuracy``, or ``r2`` for a regression."""
    if any("mse" in r.get("metrics", {}) for r in records) and \
            not any("accuracy" in r.get("metrics", {}) for r in records):
        return "r2"
    return "accuracy"


_LABELS = {"accuracy": "accuracy", "r2": "R²"}


def _score(record: dict) -> float:
    """Higher is better: accuracy, or R² for a regression."""
    m = record.get("metrics", {})
    return m.get("accuracy", m.get("r2", float("-inf")))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _lr(record: dict) -> float | None:
    return record.get("config", {}).get("train", {}).get("lr")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Options that change only speed or how a cell is scored, never what was trained; lr is
# not here because best_over_lr chooses among learning rates, and seq_len is a column.
_NOT_RECIPE = {"model": ("scan", "chunk_size"),
               "train": ("lr", "precision", "eval_batches", "eval_batch_size", "check_every",
                         "check_batches"),
               "probe_params": ("seq_len",)}


def _options(record: dict) -> dict:
    """The recipe of a cell beyond mixer, width and length, flattened: its model options,
    training options and probe parameters, without the ones in ``_NOT_RECIPE``."""
    config = without_later_options(record.get("config", {}))
    out = {}
    for part, ignored in _NOT_RECIPE.items():
        out.update({f"{part}.{k}": v for k, v in _flat(config.get(part, {})).items()
                    if k.rsplit(".", 1)[-1] not in ignored})
    return out


def series_names(records: list[dict]) -> dict[int, str]:
    """A name per record for tables and legends: the mixer, plus the recipe options (model,
    training or probe) that differ between cells of the same mixer (e.g. ``mamba
    (mlp_hidden=0, d_state=4)`` or ``attention (steps=4500)``), so that different recipes
    are separate lines rather than one line with a wide error bar."""
    by_mixer: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mixer[r["mixer"]].append(r)
    names = {}
    for mixer, recs in by_mixer.items():
        opts = [_options(r) for r in recs]
        keys = sorted({k for o in opts for k in o})
        varying = [k for k in keys if len({json.dumps(o.get(k)) for o in opts}) > 1]
        for r, o in zip(recs, opts):
            parts = [f"{k.rsplit('.', 1)[-1]}={o[k]}" for k in varying if k in o]
            names[id(r)] = mixer + (f" ({', '.join(parts)})" if parts else "")
    return names


def best_over_lr(records: list[dict]) -> list[dict]:
    """Of the finished records whose recipes differ only in learning rate (or in how they
    were scored), the most accurate one each."""
    best: dict[str, dict] = {}
    for r in records:
        if r["status"] != "ok":
            continue
        group = json.dumps([r["probe"], r["mixer"], r["dim"], r["layers"], r["seq_len"], r["seed"],
                            _options(r)], sort_keys=True)
        if group not in best or _score(r) > _score(best[group]):
            best[group] = r
    return list(best.values())


def markdown_table(records: list[dict]) -> str:
    """One row per cell: config, status, accuracy at each length, steps, size and time.

    With several learning rates per cell, ``*`` marks the one the plots use.
    """
    lengths = sorted({e["seq_len"] for r in records for e in r.get("by_length", [])})
    chosen = {id(r) for r in best_over_lr(records)}
    names = series_names(records)
    several = len({_lr(r) for r in records}) > 1
    columns = ([("acc", "accuracy", ".3f")] if headline(records) == "accuracy"
               else [("R²", "r2", ".3f"), ("MSE", "mse", ".4g")])
    head = (["mixer", "dim", "layers", "train len", "lr", "seed", "status"]
            + [f"{name} @{n}" for name, _, _ in columns for n in lengths]
            + ["steps", "params", "state bytes", "train s"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(records, key=lambda r: (names[id(r)], r["dim"], r["seq_len"], _lr(r) or 0, r["seed"]))
    for r in order:
        lr = _fmt(_lr(r), "g") + (" *" if several and id(r) in chosen else "")
        cells = [names[id(r)], str(r["dim"]), str(r["layers"]), str(r["seq_len"]), lr, str(r["seed"]),
                 r["status"] if r["status"] == "ok" else f"{r['status']}: {r['message'][:60]}"]
        cells += [_fmt(_accuracy_at(r, n, key), spec) for _, key, spec in columns for n in lengths]
        cells += [_fmt(r.get("steps"), "d"), _fmt(r.get("params"), ","),
                  _fmt(r.get("state_bytes"), ","), _fmt(r.get("train_s"), ".1f")]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)


def seed_summary_table(records: list[dict], metric: str = "accuracy") -> str | None:
    """Mean ± standard deviation over seeds: a row per series (mixer and recipe), width and
    training length, of the cells :func:`best_over_lr` keeps; None when no row has two seeds.

    The deviation is the sample one (n - 1). ``seeds`` lists the seeds that finished, so a
    seed that diverged or failed shows by its absence.
    """
    from statistics import mean, stdev

    names = series_names(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in best_over_lr(records):
        if metric in r.get("metrics", {}):
            groups[(names[id(r)], r["dim"], r["seq_len"])].append(r)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    head = ["mixer", "dim", "train len", "seeds", f"{_LABELS[metric]} mean ± std", "train s mean"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (name, dim, length), recs in sorted(groups.items()):
        scores = [r["metrics"][metric] for r in recs]
        spread = f" ± {stdev(scores):.3f}" if len(scores) > 1 else ""
        times = [r["train_s"] for r in recs if r.get("train_s") is not None]
        seeds = ",".join(str(s) for s in sorted(r["seed"] for r in recs))
        cells = [name, str(dim), str(length), seeds, f"{mean(scores):.3f}{spread}",
                 _fmt(mean(times) if times else None, ".1f")]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)


def _series(points: dict) -> tuple[list, list, list, list]:
    """x, mean, lower error, upper error from {x: [values over seeds]}."""
    xs = sorted(points)
    means = [sum(points[x]) / len(points[x]) for x in xs]
    lo = [m - min(points[x]) for x, m in zip(xs, means)]
    hi = [max(points[x]) - m for x, m in zip(xs, means)]
    return xs, means, lo, hi


def _figure(panels: dict, title: str, xlabel: str, path: Path, metric: str = "accuracy") -> Path:
    """panels: {(order, panel title, x to mark or None): {mixer: {x: [accuracies]}}} -> one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = sorted(panels)
    lines = max(len(panels[k]) for k in keys)
    fig = Figure(figsize=(4.2 * len(keys), 3.4 + 0.22 * lines), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        _, panel_title, mark = key
        for mixer in sorted(panels[key]):
            xs, means, lo, hi = _series(panels[key][mixer])
            ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=3, label=mixer)
        if mark is not None:
            ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for series in panels[key].values() for x in series})
        ax.set_xticks(ticks, [str(t) for t in ticks], rotation=45 if len(ticks) > 6 else 0)
        ax.minorticks_off()
        _set_ylim(ax, metric, [v for s in panels[key].values() for vs in s.values() for v in vs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_LABELS[metric])
        ax.set_title(panel_title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: no curve hidden
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def _set_ylim(ax, metric: str, values: list[float]) -> None:
    # Accuracy lives in [0, 1]; R² is at most 1 but has no floor (worse than the mean).
    low = -0.02 if metric == "accuracy" else min(-0.02, min(values, default=0.0) - 0.05)
    ax.set_ylim(low, 1.02)


def _by_panel(records: list[dict], key) -> dict:
    """Records grouped by panel. Series are named within a panel, so a legend names only the
    options that differ between its own lines (not, say, the steps that came with a length)."""
    groups: dict = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return groups


def _nested() -> dict:
    return defaultdict(lambda: defaultdict(lambda: defaultdict(list)))


def plot_accuracy_vs_dim(records: list[dict], path: Path, metric: str = "accuracy") -> Path:
    """Accuracy at the trained length against model dimension: a line per mixer, a panel per
    training length."""
    panels = _nested()
    ok = [r for r in records if r["status"] == "ok" and metric in r.get("metrics", {})]
    for key, recs in _by_panel(ok, lambda r: (r["seq_len"], f"trained at length {r['seq_len']}",
                                               None)).items():
        names = series_names(recs)
        for r in recs:
            panels[key][names[id(r)]][r["dim"]].append(r["metrics"][metric])
    return _figure(panels, f"{section(records[0])}: {_LABELS[metric]} vs model dimension",
                   "model dimension", path, metric)


def plot_accuracy_vs_length(records: list[dict], path: Path, metric: str = "accuracy") -> Path:
    """Accuracy against test length: a line per mixer, a panel per (dim, training length);
    a dotted line marks the training length."""
    panels = _nested()
    ok = [r for r in records if r["status"] == "ok"]
    for key, recs in _by_panel(ok, lambda r: ((r["dim"], r["seq_len"]),
                                               f"d={r['dim']}, trained at {r['seq_len']}",
                                               r["seq_len"])).items():
        names = series_names(recs)
        for r in recs:
            for e in r.get("by_length", []):
                if metric in e:
                    panels[key][names[id(r)]][e["seq_len"]].append(e[metric])
    return _figure(panels, f"{section(records[0])}: {_LABELS[metric]} vs test length", "test length",
                   path, metric)


def plot_accuracy_by_mixer(records: list[dict], path: Path, metric: str = "accuracy") -> Path:
    """A bar per mixer (seed mean, min-max whisker) for a sweep with a single width and length."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by: dict[str, list[float]] = defaultdict(list)
    series = series_names(records)
    for r in records:
        if metric in r.get("metrics", {}):
            by[series[id(r)]].append(r["metrics"][metric])
    names, means, lo, hi = _series(by)
    fig = Figure(figsize=(1.2 * len(names) + 2.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = ax.bar(names, means, yerr=[lo, hi], capsize=3, color="tab:blue")
    ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize="small")
    ax.set_ylim(0 if metric == "accuracy" else min(0.0, min(means) - 0.05), 1.08)
    ax.set_ylabel(_LABELS[metric])
    if max(len(n) for n in names) > 12:  # recipe names such as "mamba (batch_size=256)" collide
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    r = records[0]
    ax.set_title(f"{section(r)}: d={r['dim']}, length {r['seq_len']}")
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=110)
    return path


def plot_learning_curves(records: list[dict], path: Path) -> Path:
    """Validation accuracy against training step (the checks of ``train.stop_at_accuracy``),
    a line per cell, a panel per (dim, training length): where a cell left a plateau, and
    where one that diverged or hit the time limit stopped (those keep their checks too)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _by_panel(records, lambda r: (r["dim"], r["seq_len"]))
    keys = sorted(groups)
    fig = Figure(figsize=(4.6 * len(keys), 3.6 + 0.22 * max(len(g) for g in groups.values())),
                 layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        names = series_names(groups[key])
        for r in groups[key]:
            steps, accs = zip(*r["checks"])
            note = "" if r["status"] == "ok" else f" [{r['status']} at step {r.get('steps', '?')}]"
            ax.plot(steps, accs, marker=".", label=f"{names[id(r)]} seed {r['seed']}{note}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"d={key[0]}, length {key[1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"{section(records[0])}: learning curves")
    fig.savefig(path, dpi=110)
    return path


def section(record: dict) -> str:
    """The report section of a record: its probe, or for a file probe the data file (and the
    task when it is regress), since each data set is a task of its own."""
    if record["probe"] != "file":
        return record["probe"]
    params = record.get("config", {}).get("probe_params", {})
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(params.get("path", "")).name)
    return f"file-{name}" + ("-regress" if params.get("task") == "regress" else "")


def write_report(results: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Write ``report.md`` and the plots of every probe in ``results`` to ``out_dir``.

    ``out_dir`` defaults to the results path without its suffix plus ``-report``.

    Raises:
        BenchError: the results file is missing or holds no cell.
    """
    results = Path(results)
    data = read_results(results, must_exist=True)
    records = data.latest()
    if not records:
        raise BenchError(f"{results} holds no results (of {len(data.bad_lines)} lines none could be "
                         "read); run seqlab bench run PROBE --out FILE first")
    out = Path(out_dir) if out_dir is not None else results.with_name(results.stem + "-report")
    make_folder(out, "--out", BenchError)
    files = ReportFiles(markdown=out / "report.md", skipped_lines=data.bad_lines)
    by_probe: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_probe[section(r)].append(r)
    parts = [f"# Probe results: {results.name}", "",
             f"Made by `seqlab bench report {results}` from {len(records)} cells."]
    commands = sorted({r["command"] for r in records if r.get("command")})
    if commands:
        parts += ["", "Sweeps:", *[f"    {c}" for c in commands]]
    pinned = Counter(what for r in records for what in r.get("pinned", ()))
    if pinned:
        parts += ["", "Cells recorded before a default changed, shown with the old default as an "
                  "option (seqlab/bench/default_changes.py):",
                  *[f"- {what}: {n} cell{'s' * (n > 1)}" for what, n in sorted(pinned.items())]]
    for probe, recs in sorted(by_probe.items()):
        metric = headline(recs)
        parts += ["", f"## {probe}", "", markdown_table(recs), ""]
        # A test length the probe cannot take (e.g. too short for its layout) shows as "-"; say why.
        why = sorted({(e["seq_len"], e["error"]) for r in recs for e in r.get("by_length", [])
                      if "error" in e})
        parts += [f"- length {n}: {msg}" for n, msg in why] + ([""] if why else [])
        summary = seed_summary_table(recs, metric)
        if summary is not None:
            several_lrs = len({_lr(r) for r in recs}) > 1
            parts += ["Over seeds" + (" (at each seed's best learning rate, as in the plots)"
                                      if several_lrs else "") + ":", "", summary, ""]
        ok = [r for r in best_over_lr(recs) if metric in r.get("metrics", {})]
        if not ok:
            parts.append("No cell finished, so there is nothing to plot.")
            continue
        # A line needs two points: one width gives a bar per mixer, one length no length plot.
        # One width trained at several lengths is all in the length plot, where each line
        # starts at its trained length; single points against width would say nothing more.
        several_lengths = len({e["seq_len"] for r in ok for e in r.get("by_length", [])}) > 1
        one_dim = len({r["dim"] for r in ok}) == 1
        if len({(r["dim"], r["seq_len"]) for r in ok}) == 1:
            png = plot_accuracy_by_mixer(ok, out / f"{probe}-{metric}-by-mixer.png", metric)
            parts += [f"![{probe}: {metric} by mixer]({png.name})", ""]
            files.plots.append(png)
        elif not (one_dim and several_lengths):
            png = plot_accuracy_vs_dim(ok, out / f"{probe}-{metric}-vs-dim.png", metric)
            parts += [f"![{probe}: {metric} vs model dimension]({png.name})", ""]
            files.plots.append(png)
        if several_lengths:
            png = plot_accuracy_vs_length(ok, out / f"{probe}-{metric}-vs-length.png", metric)
            files.plots.append(png)
            parts.append(f"![{probe}: {metric} vs test length]({png.name})")
        curves = [r for r in recs if len(r.get("checks") or []) >= 2]
        if curves:
            png = plot_learning_curves(curves, out / f"{probe}-learning-curves.png")
            files.plots.append(png)
            parts += ["", f"![{probe}: validation accuracy against step]({png.name})"]
    files.markdown.write_text("\n".join(parts) + "\n")
    return files

"""Accuracy against sparsity of recurrent mixers: magnitude pruning vs random-graph masks.

After "Investigating Sparsity in Recurrent Neural Networks" (papers/abstracts.txt): the
hidden-to-hidden matrices of an LSTM and a GRU are made sparse either by gradual
magnitude pruning (Zhu & Gupta's cubic schedule, from 10% to 75% of the run, then
training on at the final sparsity) or by a fixed random-graph mask over the hidden
units from the first step (Watts-Strogatz with rewiring p = 0.1, Barabasi-Albert), at
sparsity 0, 0.5, 0.8, 0.9 and 0.95. Each cell is trained with the probe loop of
``seqlab bench run`` (``seqlab.bench.fit_probe``: AdamW with weight decay, the pruned
weights held at exactly zero) on the sequential digits probe (scikit-learn's 8x8 digits
as 64-pixel sequences, 10 classes) and scored on its whole test set (360 images).

A random graph's density moves in steps of its degree (Watts-Strogatz: k/n with k even;
Barabasi-Albert: 2m(n-m)/n^2), so its realised sparsity is the nearest the graph allows;
the table gives it beside the accuracy, and the plot places each point at it.

    python benchmarks/sparsity_curve.py          # 26 cells: d=64, 2 layers, 800 steps; ~1 h on 2 cores
    python benchmarks/sparsity_curve.py --quick  # 18 cells: d=32, 1 layer, 100 steps, magnitude vs
                                                 # Watts-Strogatz; ~2 min on 2 quiet cores
Writes benchmarks/out/sparsity_curve[-quick].json and a PNG beside it. The same cells
run from the command line, e.g.:
    seqlab bench run digits --mixers lstm,gru --sparsity 0,0.5,0.8,0.9,0.95 \\
        --set sparsity.method=random_graph --set sparsity.graph=barabasi_albert
and ``--from-results FILE`` tables and plots such a results file instead of training (a
sweep can then be split over sessions, and ``--time-limit`` bounds each call).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from seqlab.bench.fit import ProbeTrainConfig, evaluate_probe, fit_probe
from seqlab.bench.sweep import CellConfig, build_model
from seqlab.train.sparsity import SparsityConfig, recurrent_matrices

HERE = Path(__file__).resolve().parent
LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95)
METHODS = {   # name: the sparsity options besides the target
    "magnitude": {"method": "magnitude"},
    "watts_strogatz": {"method": "random_graph", "graph": "watts_strogatz", "p": 0.1},
    "barabasi_albert": {"method": "random_graph", "graph": "barabasi_albert"},
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small model and few steps (< 3 min)")
    ap.add_argument("--probe", default="digits")
    ap.add_argument("--mixers", default="lstm,gru")
    ap.add_argument("--methods", help=f"default {','.join(METHODS)}; --quick magnitude,watts_strogatz")
    ap.add_argument("--levels", default=",".join(f"{s:g}" for s in LEVELS))
    ap.add_argument("--dim", type=int, help="width = hidden units (default 64; --quick 32)")
    ap.add_argument("--layers", type=int, help="default 2; --quick 1")
    ap.add_argument("--steps", type=int, help="default 800; --quick 100")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, help="default 1e-2; --quick 2e-2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--from-results", type=Path, metavar="JSONL",
                    help="train nothing: table and plot the cells of a `seqlab bench run` results "
                    "file (sweeps with --sparsity, one per method; see the module docstring)")
    ap.add_argument("--out", type=Path,
                    help="JSON results (default benchmarks/out/sparsity_curve[-quick].json)")
    args = ap.parse_args(argv)
    args.dim = args.dim or (32 if args.quick else 64)
    args.layers = args.layers or (1 if args.quick else 2)
    args.steps = args.steps or (100 if args.quick else 800)
    args.lr = args.lr or (2e-2 if args.quick else 1e-2)
    args.methods = args.methods or ("magnitude,watts_strogatz" if args.quick else ",".join(METHODS))
    args.out = args.out or HERE / "out" / f"sparsity_curve{'-quick' if args.quick else ''}.json"
    return args


def sparsity_options(method: str, level: float, steps: int) -> SparsityConfig:
    if level == 0:
        return SparsityConfig()
    extra = {}
    if METHODS[method]["method"] == "magnitude":
        extra = {"start_step": steps // 10, "end_step": max(steps // 10 + 1, 3 * steps // 4),
                 "frequency": max(1, steps // 40)}
    return SparsityConfig(target=level, **METHODS[method], **extra)


def run_cell(args, mixer: str, method: str, level: float, seed: int) -> dict:
    train = ProbeTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             warmup=max(1, args.steps // 20), precision="float32",
                             sparsity=sparsity_options(method, level, args.steps))
    cell = CellConfig(probe=args.probe, mixer=mixer, dim=args.dim, layers=args.layers, seed=seed,
                      model={"mlp_hidden": 2 * args.dim}, train=train)
    probe = cell.build_probe()
    torch.manual_seed(seed)
    model = build_model(cell, probe)
    fit = fit_probe(model, probe, train, seed=seed)
    test = probe.num_examples("test")   # None: an endless generator, scored on 1024 sequences
    batches = math.ceil((test or 1024) / 256)
    metrics = evaluate_probe(model, probe, batches=batches, batch_size=256, seed=seed)
    hh = [p for p, _, _ in recurrent_matrices(model).values()]
    realised = sum(int((p == 0).sum()) for p in hh) / sum(p.numel() for p in hh)
    return {"mixer": mixer, "method": method, "level": level, "seed": seed, "status": fit.status,
            "accuracy": metrics["accuracy"], "sparsity": realised, "final_loss": fit.losses[-1],
            "train_s": fit.train_s, "key": cell.key, "config": cell.to_dict()}


def table(records: list[dict], mixers: list[str], methods: list[str], levels: list[float]) -> str:
    """Mean test accuracy (realised sparsity where it differs from the level) per cell."""
    head = ["mixer", "method"] + [f"s={lv:g}" for lv in levels]
    rows = [head, ["---"] * len(head)]
    for mixer in mixers:
        for method in methods:
            row = [mixer, method]
            for lv in levels:
                got = [r for r in records if r["mixer"] == mixer and r["level"] == lv
                       and (r["method"] == method or lv == 0)]
                if not got:
                    row.append("-")
                    continue
                acc = sum(r["accuracy"] for r in got) / len(got)
                real = sum(r["sparsity"] for r in got) / len(got)
                row.append(f"{acc:.3f}" + (f" ({real:.3f})" if abs(real - lv) > 5e-3 else ""))
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows)


def plot(records: list[dict], mixers: list[str], methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mixers), figsize=(5 * len(mixers), 4), squeeze=False,
                             sharey=True)
    for ax, mixer in zip(axes[0], mixers):
        for method in methods:
            pts = sorted((r["sparsity"], r["accuracy"]) for r in records if r["mixer"] == mixer
                         and (r["method"] == method or r["level"] == 0))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_title(mixer)
        ax.set_xlabel("sparsity of the hidden-to-hidden matrices")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def method_of(sparsity: dict) -> str:
    """This script's method name for a cell's sparsity options."""
    if not sparsity.get("target"):
        return "dense"
    return "magnitude" if sparsity["method"] == "magnitude" else sparsity["graph"]


def realised_sparsity(config: dict) -> float:
    """The zeros a cell's masks start with: a record from before bench records kept it.
    Exact for random graphs (fixed masks); magnitude pruning reaches its target."""
    from seqlab.train.sparsity import Pruner

    cell = CellConfig.from_dict(config)
    if cell.train.sparsity.method == "magnitude":
        return cell.train.sparsity.target
    pruner = Pruner(cell.train.sparsity, build_model(cell, cell.build_probe()), cell.train.steps)
    pruner.start()
    return pruner.sparsity()


def records_from_results(path: Path) -> list[dict]:
    """This script's records from a ``seqlab bench run`` results file (finished cells)."""
    from seqlab.bench.results import read_results

    out = []
    for r in read_results(path, must_exist=True).latest():
        if r["status"] != "ok":
            continue
        sp = r["config"]["train"].get("sparsity", {})
        real = r.get("sparsity")
        out.append({"mixer": r["mixer"], "method": method_of(sp), "level": sp.get("target", 0.0),
                    "seed": r["seed"], "accuracy": r["metrics"]["accuracy"],
                    "sparsity": real if real is not None else
                    (0.0 if not sp.get("target") else realised_sparsity(r["config"])),
                    "final_loss": r["final_loss"], "train_s": r["train_s"], "key": r["key"]})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_results is not None:
        records = records_from_results(args.from_results)
        mixers = list(dict.fromkeys(r["mixer"] for r in records))
        methods = [m for m in METHODS if any(r["method"] == m for r in records)]
        levels = sorted({r["level"] for r in records})
        print(table(records, mixers, methods, levels))
        png = args.out.with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(records, mixers, methods, png, f"{args.from_results.name}: {', '.join(mixers)}")
        args.out.write_text(json.dumps({"meta": {"from_results": str(args.from_results)},
                                        "records": records}, indent=1))
        print(f"\nwrote {args.out} and {png}")
        return 0
    torch.set_num_threads(args.threads)
    mixers = [m for m in args.mixers.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    levels = [float(s) for s in args.levels.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [(mx, "dense" if lv == 0 else me, lv, sd) for mx in mixers for lv in levels
             for me in (methods if lv else methods[:1]) for sd in seeds]
    print(f"{len(cells)} cells: {args.probe}, {','.join(mixers)} d={args.dim} layers={args.layers}, "
          f"{args.steps} steps at batch {args.batch_size}, lr {args.lr:g}, threads {args.threads}")
    records, t0 = [], time.perf_counter()
    for mixer, method, level, seed in cells:
        rec = run_cell(args, mixer, method, level, seed)
        records.append(rec)
        print(f"  {mixer:5s} {method:16s} s={level:<5g} realised {rec['sparsity']:.3f}  accuracy "
              f"{rec['accuracy']:.3f}  ({rec['train_s']:.1f} s)", flush=True)
    elapsed = time.perf_counter() - t0
    title = (f"{args.probe}: {args.layers} layer(s), d={args.dim}, {args.steps} steps, "
             f"seeds {args.seeds}")
    print(f"\ntest accuracy by sparsity of the recurrent matrices ({title}; realised sparsity in "
          f"parentheses where the graph cannot hit the level); {elapsed:.0f} s\n")
    print(table(records, mixers, methods, levels))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "elapsed_s": elapsed, "torch": torch.__version__, "machine": platform.machine(),
            "time": time.time()}
    args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    png = args.out.with_suffix(".png")
    plot(records, mixers, methods, png, title)
    print(f"\nwrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

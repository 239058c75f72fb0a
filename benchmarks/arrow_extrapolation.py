"""Arrow pointing: train on small images, test on larger ones (pLSTM's extrapolation task).

pLSTM (Pöppel et al. 2025, https://arxiv.org/abs/2506.11997) introduces arrow-pointing
extrapolation: does the arrow point at the circle? Objects keep their size in pixels as the
image grows, so the distance between arrow and circle grows beyond anything seen in
training. The paper reports that pLSTM generalises to larger images and Transformers do not.

This script trains, with the same steps, batch, learning rate and data stream, on the
``arrow`` probe's 16 x 16 images (``seqlab/tasks/probes/arrow.py``) and scores each model on
test images of several sides (default 16, 24, 32):

* ``plstm``: ``seqlab.models.grid.GridClassifier``, blocks alternating P and D mode as the
  paper's vision model, four corners, 2 x 2 patches (a cell per pixel costs 5-7x more CPU),
  mean over cells. It has no position embedding: nothing in it depends on the image size.
* ``attention``: ``seqlab.models.classifier.SequenceClassifier`` over the raster sequence
  (row after row), causal softmax attention with rotary positions over the raster index.
  At a larger side nothing is interpolated: positions simply run further (up to side**2),
  and the token below a pixel sits ``side`` tokens later instead of 16, so the vertical
  offsets seen in training no longer mean "one row down".
* ``mamba``: the same sequence classifier with mamba layers (a causal scan, no positions).

Sequence models pool by the mean over positions like the grid model (``--pooling last``:
the last position). Every model: ``--layers`` blocks of width ``--dim`` with a gated MLP of
2 x dim; AdamW with warm-up and cosine decay (``seqlab.bench.fit_probe``). One thread by
default, so the CPU times are comparable.

    python benchmarks/arrow_extrapolation.py                 # 500 steps each, sides 16,24,32: ~25 CPU min
    python benchmarks/arrow_extrapolation.py --quick         # tiny models, 30 steps: < 1 min
    python benchmarks/arrow_extrapolation.py --sides 16,24,32,48 --seeds 0,1
    python benchmarks/arrow_extrapolation.py --from-results a.json,b.json --out seeds.json   # table + plot per seed
Prints a table, writes benchmarks/out/arrow_extrapolation[-quick].json and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from seqlab.bench.fit import ProbeTrainConfig, evaluate_probe, fit_probe
from seqlab.models.classifier import ClassifierConfig, SequenceClassifier
from seqlab.models.grid import GridClassifier, GridClassifierConfig
from seqlab.models.lm import LMConfig
from seqlab.tasks import probes

HERE = Path(__file__).resolve().parent
MODELS = ("plstm", "attention", "mamba")
TRAIN_SIDE = 16


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"any of {','.join(MODELS)}")
    ap.add_argument("--sides", default="16,24,32", help="test image sides (the first trained on is 16)")
    ap.add_argument("--seeds", default="0", help="one training run per model and seed, e.g. 0,1,2")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--layers", type=int, default=4, help="blocks per model (pLSTM: P, D, P, D, ...)")
    ap.add_argument("--patch", type=int, default=2, help="pLSTM patch side (1: a cell per pixel)")
    ap.add_argument("--pooling", choices=("mean", "last"), default="mean",
                    help="how the sequence models read out (the grid model always takes the mean)")
    ap.add_argument("--eval-examples", type=int, default=512, help="test images per side")
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/out/arrow_extrapolation.json (-quick.json with --quick)")
    ap.add_argument("--quick", action="store_true", help="width 16, 2 layers, 30 steps, 64 test images")
    ap.add_argument("--from-results", default=None, metavar="JSON,JSON",
                    help="train nothing: table and plot the runs of earlier result files "
                         "(one row and line per model and seed), written to --out's PNG")
    args = ap.parse_args(argv)
    if args.from_results:
        args.from_results = [Path(p) for p in args.from_results.split(",")]
        if missing := [str(p) for p in args.from_results if not p.is_file()]:
            ap.error(f"--from-results: no such file {', '.join(missing)}")
        args.loaded = load_runs(args.from_results, ap.error)
    if args.quick:
        args.dim, args.layers, args.steps, args.eval_examples, args.sides = 16, 2, 30, 64, "16,24"
    try:
        args.sides = [int(s) for s in args.sides.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        ap.error(f"{e}: --sides and --seeds take comma-separated ints, e.g. 16,24,32")
    args.models = args.models.split(",")
    if unknown := set(args.models) - set(MODELS):
        ap.error(f"unknown --models {sorted(unknown)}; choose from {','.join(MODELS)}")
    if TRAIN_SIDE not in args.sides:
        args.sides.insert(0, TRAIN_SIDE)
    if any(s % args.patch for s in args.sides):
        ap.error(f"--sides {args.sides} must be multiples of --patch {args.patch}")
    if args.eval_examples % args.eval_batch:
        ap.error(f"--eval-examples {args.eval_examples} must be a multiple of --eval-batch {args.eval_batch}")
    if args.out is None:
        args.out = HERE / "out" / ("arrow_extrapolation-quick.json" if args.quick else "arrow_extrapolation.json")
    return args


def build(name: str, args) -> torch.nn.Module:
    if name == "plstm":
        modes = tuple("PD"[i % 2] for i in range(args.layers))
        return GridClassifier(GridClassifierConfig(vocab_size=4, dim=args.dim, modes=modes,
                                                   patch=args.patch, mlp_hidden=2 * args.dim))
    options = {"attention": {"heads": 4}} if name == "attention" else {}
    backbone = LMConfig(vocab_size=4, dim=args.dim, layers=(name,) * args.layers,
                        mlp_hidden=2 * args.dim, mixer_options=options)
    return SequenceClassifier(ClassifierConfig(backbone=backbone, num_classes=2, pooling=args.pooling))


def run_one(name: str, seed: int, args) -> dict:
    probe = probes.build("arrow", seq_len=TRAIN_SIDE ** 2)
    train = ProbeTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             warmup=max(1, args.steps // 20))
    torch.manual_seed(seed)
    model = build(name, args)
    bar = tqdm(total=args.steps, desc=f"{name} seed {seed}", unit="step", leave=False)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    cpu = time.process_time()
    fit = fit_probe(model, probe, train, seed=seed, on_step=on_step)
    train_cpu = time.process_time() - cpu
    bar.close()
    accuracy, eval_cpu = {}, {}
    for side in args.sides:
        cpu = time.process_time()
        # The same test images (split "test", seed 0) for every model and training seed.
        accuracy[side] = evaluate_probe(model, probe.with_length(side ** 2),
                                        batches=args.eval_examples // args.eval_batch,
                                        batch_size=args.eval_batch)["accuracy"]
        eval_cpu[side] = time.process_time() - cpu
    n = len(fit.losses)
    tail = fit.losses[-max(1, n // 10):]
    return {"model": name, "seed": seed, "status": fit.status, "steps": fit.steps,
            "params": sum(p.numel() for p in model.parameters()),
            "train_cpu_s": train_cpu, "train_wall_s": fit.train_s, "eval_cpu_s": eval_cpu,
            "final_loss": sum(tail) / len(tail),
            "losses": fit.losses[::10], "accuracy": accuracy}


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def print_table(runs: list[dict], args) -> None:
    print(f"\nArrow pointing: test accuracy by image side (trained on {TRAIN_SIDE} x {TRAIN_SIDE}, "
          f"{args.steps} steps of {args.batch_size}, lr {args.lr:g}, {args.eval_examples} test images "
          f"per side, mean over seeds {args.seeds})")
    cols = ["model", "params", *(f"{s} x {s}" for s in args.sides), "final train loss",
            "train CPU s", "eval CPU s"]
    print("| " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * (len(cols) - 1))
    for name in args.models:
        rs = [r for r in runs if r["model"] == name]
        accs = [mean(r["accuracy"][s] for r in rs) for s in args.sides]
        cells = [name, f"{rs[0]['params']:,}", *(f"{a:.3f}" for a in accs),
                 f"{mean(r['final_loss'] for r in rs):.3f}",
                 f"{mean(r['train_cpu_s'] for r in rs):.0f}",
                 f"{mean(sum(r['eval_cpu_s'].values()) for r in rs):.0f}"]
        print("| " + " | ".join(cells) + " |")


def load_runs(paths: list[Path], fail) -> tuple[list[dict], int]:
    """The runs of earlier result files (accuracy keyed by int side), and their step count.
    ``fail`` (the parser's ``error``: exit 2) gets files of different step counts, or one that
    is not a result file."""
    runs, steps = [], set()
    for path in paths:
        try:
            data = json.loads(path.read_text())
            steps.add(data["settings"]["steps"])
            for r in data["runs"]:
                runs.append({**r, "accuracy": {int(k): v for k, v in r["accuracy"].items()}})
        except (ValueError, KeyError, TypeError) as e:
            fail(f"--from-results: {path} is not a file this script wrote ({e!r})")
    if len(steps) != 1:
        fail(f"--from-results: the files trained for different steps {sorted(steps)}; "
             "compare runs of one recipe")
    return runs, steps.pop()


def print_seed_table(runs: list[dict], sides: list[int]) -> None:
    """One row per model and seed ("-" for a side the run did not score)."""
    cols = ["model", "seed", *(f"{s} x {s}" for s in sides), "final train loss", "train CPU s"]
    print("| " + " | ".join(cols) + " |")
    print("|---|---:|" + "---:|" * (len(cols) - 2))
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        for r in rs:
            accs = [f"{r['accuracy'][s]:.3f}" if s in r["accuracy"] else "-" for s in sides]
            print(f"| {name} | {r['seed']} | " + " | ".join(accs)
                  + f" | {r['final_loss']:.3f} | {r['train_cpu_s']:.0f} |")


def plot_seeds(runs: list[dict], sides: list[int], steps: int, path: Path) -> None:
    """Accuracy against side, a line per model and seed (sides a run did not score are left out)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = dict(zip(dict.fromkeys(r["model"] for r in runs), ("C0", "C1", "C2")))
    for r in runs:
        xs = [s for s in sides if s in r["accuracy"]]
        ax.plot(xs, [r["accuracy"][s] for s in xs], marker="o", color=colours[r["model"]],
                alpha=0.8, label=f"{r['model']} seed {r['seed']}",
                linestyle="-" if r["model"] == "plstm" else "--")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.axvline(TRAIN_SIDE, color="grey", linestyle="-.", linewidth=0.8, label="training side")
    ax.set_xticks(sides)
    ax.set_ylim(0.4, 1.0)
    ax.set_xlabel("test image side (pixels)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"arrow pointing: trained on {TRAIN_SIDE} x {TRAIN_SIDE}, {steps} steps, each seed",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(runs: list[dict], args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.9))
    for name, marker in zip(args.models, "osD"):
        rs = [r for r in runs if r["model"] == name]
        left.plot(args.sides, [mean(r["accuracy"][s] for r in rs) for s in args.sides],
                  marker=marker, label=name)
        for r in rs:
            right.plot([10 * i + 1 for i in range(len(r["losses"]))], r["losses"], alpha=0.7,
                       label=f"{name} seed {r['seed']}")
    left.axhline(0.5, color="grey", linestyle=":", label="chance")
    left.axvline(TRAIN_SIDE, color="grey", linestyle="--", label="training side")
    left.set_xticks(args.sides)
    left.set_ylim(0.4, 1.02)
    left.set_xlabel("test image side (pixels)")
    left.set_ylabel("test accuracy")
    left.legend(fontsize=8)
    right.set_xlabel("training step")
    right.set_ylabel("training loss (every 10th step)")
    right.legend(fontsize=8)
    fig.suptitle(f"arrow pointing: trained on {TRAIN_SIDE} x {TRAIN_SIDE}, {args.steps} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_results:
        runs, steps = args.loaded
        sides = sorted({s for r in runs for s in r["accuracy"]})
        print(f"Arrow pointing, {steps} steps, from {', '.join(map(str, args.from_results))}")
        print_seed_table(runs, sides)
        png = args.out.with_suffix(".png")
        plot_seeds(runs, sides, steps, png)
        print(f"\nwrote {png}")
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for name in args.models:
            run = run_one(name, seed, args)
            accs = ", ".join(f"{s}: {a:.3f}" for s, a in run["accuracy"].items())
            print(f"{name} seed {seed}: {run['steps']} steps in {run['train_cpu_s']:.0f} CPU s "
                  f"(final loss {run['final_loss']:.3f}); accuracy {accs}", flush=True)
            runs.append(run)
    print_table(runs, args)
    total = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                    "torch": torch.__version__, "settings": settings,
                                    "runs": runs, "wall_s": total}, indent=1))
    png = args.out.with_suffix(".png")
    plot(runs, args, png)
    print(f"\nwrote {args.out} and {png} in {total:.0f} s")


if __name__ == "__main__":
    main()

"""State collapse in mamba on passkey retrieval, and a smaller state as its mitigation.

Stuffed Mamba (Chen et al. 2024) finds that a recurrent state that is large for the
training length never has to learn to forget: beyond the training length the state
keeps filling, and the model fails even on information it has just read. Two of its
mitigations need no new machinery: a state sized to the training length, and
continued training on longer sequences.

This script trains a 2-layer mamba (width 64, no MLP) on the 5-digit ``passkey`` probe
at a short length, once per entry of ``--runs``, then scores it on longer sequences
with the key placed at fixed depths (0 = at the start, 1 = just before the query).
An entry is a d_state (``16``), or a d_state and a longer length (``16/256``): the
model trained at ``--train-len`` then trains ``--continue-steps`` more at that length.
Training straight at the longer length is what one would rather compare, but there
mamba sits on the passkey plateau for thousands of steps (docs/results.md).
The depth separates the two ways to fail at length:

* forgetting: the key is too far back; a key near the query (depth 0.9-1) is still read;
* collapse: a long stretch of filler has corrupted the state, so even a key near the
  query is lost.

It also records each layer's state norm ||h|| at the end of the sequence: a state that
keeps growing with length has not learned to forget.

    python benchmarks/passkey_collapse.py            # 16, 4 and 16/256: about 10 minutes
    python benchmarks/passkey_collapse.py --quick    # seconds-long smoke run
Prints a table, writes benchmarks/out/passkey_collapse.json and a PNG beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from seqlab.bench.fit import ProbeTrainConfig, evaluate_probe, fit_probe
from seqlab.bench.sweep import CellConfig, build_model
from seqlab.tasks import probes

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="16,4,16/256",
                    help="models: D (d_state D) or D/L (d_state D, then continued at length L)")
    ap.add_argument("--train-len", type=int, default=64)
    ap.add_argument("--continue-steps", type=int, default=600)
    ap.add_argument("--lengths", default="64,256,1024,4096,16384")
    ap.add_argument("--depths", default="0,0.5,0.9,1")
    ap.add_argument("--steps", type=int, default=4000, help="training budget; stops at 99%% validation accuracy")
    ap.add_argument("--eval-batches", type=int, default=4, help="batches of 16 per (length, depth)")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "passkey_collapse.json")
    ap.add_argument("--quick", action="store_true", help="a tiny run that only shows the script works")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.train_len, args.lengths, args.depths = "4,4/32", 16, "16,32", "0,1"
        args.steps, args.continue_steps, args.eval_batches = 20, 10, 1
    try:
        args.runs = [(int(d), int(n) if n else None)
                     for d, _, n in (spec.partition("/") for spec in args.runs.split(","))]
        args.lengths = [int(x) for x in args.lengths.split(",")]
        args.depths = [float(x) for x in args.depths.split(",")]
    except ValueError as e:
        ap.error(f"{e}: --runs takes D or D/L entries (e.g. 16,4,16/256), --lengths ints, "
                 "--depths numbers in [0, 1], all comma-separated")
    return args


def cell_for(d_state: int, length: int, steps: int) -> CellConfig:
    """The recipe of the passkey reproduction in docs/results.md, at one state size."""
    return CellConfig(
        probe="passkey", mixer="mamba", dim=64, layers=2,
        probe_params={"seq_len": length},
        model={"mlp_hidden": 0, "mixer_options": {"mamba": {"scan": "cpp", "d_state": d_state}}},
        train=ProbeTrainConfig(steps=steps, batch_size=32, lr=3e-3, warmup=20,
                               stop_at_accuracy=0.99))


def train(cell: CellConfig, model=None):
    """Train ``cell``'s model from scratch, or train ``model`` further on ``cell``'s probe."""
    probe = cell.build_probe()
    torch.manual_seed(cell.seed)
    model = build_model(cell, probe) if model is None else model
    desc = f"train d_state={cell.model['mixer_options']['mamba']['d_state']} at {probe.seq_len}"
    with tqdm(total=cell.train.steps, desc=desc, unit="step") as bar:
        def on_step(step, loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        fit = fit_probe(model, probe, cell.train, seed=cell.seed, on_step=on_step)
    return model, fit


@torch.no_grad()
def state_norms(model, length: int, batches: int) -> list[float]:
    """Mean ||h|| of each layer's SSM state after reading a test passkey sequence."""
    probe = probes.build("passkey", seq_len=length)
    totals = None
    for i in range(batches):
        _, state = model.features(probe.batch("test", i, 16).inputs)
        norms = torch.stack([s.h.flatten(1).norm(dim=1).mean() for s in state.layers])
        totals = norms if totals is None else totals + norms
    return (totals / batches).tolist()


def score(model, lengths, depths, batches) -> list[dict]:
    rows = []
    grid = [(n, d) for n in lengths for d in depths]
    for n, depth in tqdm(grid, desc="score", unit="cell"):
        probe = probes.build("passkey", seq_len=n, depth=depth)
        m = evaluate_probe(model, probe, batches=batches, batch_size=16)
        rows.append({"length": n, "depth": depth, "accuracy": m["accuracy"],
                     "exact_match": m["exact_match"]})
    return rows


def print_table(runs: list[dict], depths: list[float]) -> None:
    columns = ["model", "length", *(f"depth {d:g}" for d in depths), "state norm per layer"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for run in runs:
        for n in run["lengths"]:
            accs = {r["depth"]: r["accuracy"] for r in run["scores"] if r["length"] == n}
            norms = ", ".join(f"{v:.1f}" for v in run["state_norms"][str(n)])
            print(f"| {run['name']} | {n} | " + " | ".join(f"{accs[d]:.3f}" for d in depths)
                  + f" | {norms} |")


def plot(runs: list[dict], depths: list[float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], runs):
        for d in depths:
            pts = sorted((r["length"], r["accuracy"]) for r in run["scores"] if r["depth"] == d)
            ax.plot(*zip(*pts), marker="o", label=f"key depth {d:g}")
        ax.axvline(run["trained_to"], color="grey", linestyle=":", label="(last) training length")
        ax.axhline(0.1, color="lightgrey", linestyle="--", label="chance")
        ax.set_xscale("log", base=2)
        ax.set_title(f"mamba {run['name']}")
        ax.set_xlabel("test length")
    axes[0][0].set_ylabel("per-digit accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the numbers in docs/results.md are single-threaded
    lengths, depths = args.lengths, args.depths
    runs = []
    trained: dict[int, tuple] = {}   # d_state -> (model, fit) at --train-len, shared by its D/L runs
    for d_state, longer in args.runs:
        t0 = time.perf_counter()
        if d_state not in trained:
            trained[d_state] = train(cell_for(d_state, args.train_len, args.steps))
        model, fit = trained[d_state]
        name, trained_to, steps = f"d_state={d_state}", args.train_len, [(args.train_len, fit.steps)]
        if longer:
            model = copy.deepcopy(model)
            model.train()
            fit = train(cell_for(d_state, longer, args.continue_steps), model)[1]
            name, trained_to = f"{name}, +{fit.steps} steps at {longer}", longer
            steps.append((longer, fit.steps))
        model.eval()
        runs.append({"name": name, "d_state": d_state, "trained_to": trained_to, "lengths": lengths,
                     "steps_at_length": steps, "train_s": fit.train_s,
                     "scores": score(model, lengths, depths, args.eval_batches),
                     "state_norms": {str(n): state_norms(model, n, args.eval_batches) for n in lengths},
                     "wall_s": time.perf_counter() - t0})
    print_table(runs, depths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                    "torch": torch.__version__, "runs": runs}, indent=1))
    png = args.out.with_suffix(".png")
    plot(runs, depths, png)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()

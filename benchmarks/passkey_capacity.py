"""Passkey capacity against state size, with and without Stuffed Mamba's training-free mitigations.

Stuffed Mamba (Chen et al. 2024, https://arxiv.org/abs/2410.07145) finds that a mamba
trained on sequences short for its state never learns to forget, so beyond the training
length its state keeps filling and it fails even on a key it has just read (state
collapse), and that the longest length at which a passkey is retrieved grows with the
state size. It proposes mitigations that need no training, applied to a trained model:
"forget more" (a constant factor on every per-token decay; ``mamba`` option
``decay_scale``) and state normalisation (each head's state held under a threshold
calibrated at the training length; ``mamba`` option ``state_norm``, per channel).

This script trains one 2-layer mamba (width 64, no MLP) per ``--d-states`` entry on the
``passkey`` probe at ``--train-len``, then, without further training, scores it at
doubling lengths in three forms:

* ``none``: as trained;
* ``state_norm``: every channel's state held under the largest norm that channel reached
  on training-length validation sequences (times ``--norm-mult``), the per-channel
  analogue of the paper's per-head thresholds;
* ``decay_scale``: every decay multiplied by lambda = 2^(-1 / (h * train_len)), so anything
  read loses half its weight every h training lengths (h = ``--decay-half-life``, 4 by
  default: lambda^train_len = 0.84; the authors' code multiplies Mamba-2's decays by
  0.9999-0.99999, which keeps 0.44-0.92 of a token over 8K tokens).

For each it reports the longest length *solved*: per-digit accuracy >= ``--threshold`` at
that length and at every shorter one tested, with the key anywhere (uniform depth: how
much the state holds) and with the key just before the query (depth 1: collapse, which
loses even what was just read).

    python benchmarks/passkey_capacity.py            # d_state 2, 4, 8, 16 at length 64
    python benchmarks/passkey_capacity.py --quick    # 2-digit keys at length 32: ~85 s of one core
Prints a table, writes benchmarks/out/passkey_capacity[-quick].json and a PNG beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from seqlab.bench.fit import ProbeTrainConfig, evaluate_probe, fit_probe
from seqlab.bench.sweep import CellConfig, build_model
from seqlab.models.lm import LM
from seqlab.models.pattern import LayerSpec
from seqlab.tasks import probes

HERE = Path(__file__).resolve().parent
VARIANTS = ("none", "state_norm", "decay_scale")
DEPTHS = {"uniform": None, "depth 1": 1.0}   # where the key sits: anywhere, or just before the query


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-states", default="2,4,8,16")
    ap.add_argument("--train-len", type=int, default=64)
    ap.add_argument("--digits", type=int, default=5, help="passkey digits")
    ap.add_argument("--max-len", type=int, default=8192, help="test lengths double from --train-len to this")
    ap.add_argument("--threshold", type=float, default=0.9, help="per-digit accuracy that counts as solved")
    ap.add_argument("--steps", type=int, default=4000,
                    help="training budget; stops at 99%% validation accuracy")
    ap.add_argument("--eval-batches", type=int, default=4, help="batches of 32 per (length, depth)")
    ap.add_argument("--norm-mult", type=float, default=1.0, help="state_norm bound = this x calibrated norm")
    ap.add_argument("--decay-half-life", type=float, default=4.0,
                    help="decay_scale's half-life in training lengths")
    ap.add_argument("--scan", choices=("cpp", "torch"), default="cpp",
                    help="training kernel (the same weights are scored with scan='torch' when mitigated)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/out/passkey_capacity.json (-quick.json with --quick)")
    ap.add_argument("--quick", action="store_true", help="a small run: about 85 s of one core")
    args = ap.parse_args(argv)
    if args.quick:
        args.d_states, args.train_len, args.digits, args.max_len = "2,4,8", 32, 2, 512
        args.steps, args.eval_batches = 600, 1
    try:
        args.d_states = [int(d) for d in args.d_states.split(",")]
    except ValueError as e:
        ap.error(f"{e}: --d-states takes comma-separated ints, e.g. 2,4,8,16")
    if not 0 < args.threshold <= 1:
        ap.error(f"--threshold = {args.threshold} must be in (0, 1]")
    if args.max_len < args.train_len:
        ap.error(f"--max-len = {args.max_len} must be at least --train-len = {args.train_len}")
    if args.out is None:
        args.out = HERE / "out" / ("passkey_capacity-quick.json" if args.quick else "passkey_capacity.json")
    return args


def lengths_from(train_len: int, max_len: int) -> list[int]:
    out = [train_len]
    while out[-1] * 2 <= max_len:
        out.append(out[-1] * 2)
    return out


def cell_for(args, d_state: int) -> CellConfig:
    """passkey_collapse.py's recipe (docs/results.md) at one state size."""
    return CellConfig(
        probe="passkey", mixer="mamba", dim=64, layers=2,
        probe_params={"seq_len": args.train_len, "num_digits": args.digits},
        model={"mlp_hidden": 0, "mixer_options": {"mamba": {"scan": args.scan, "d_state": d_state}}},
        train=ProbeTrainConfig(steps=args.steps, batch_size=32, lr=3e-3, warmup=20,
                               stop_at_accuracy=0.99, check_every=25))


def with_mamba_options(model: LM, per_layer: list[dict]) -> LM:
    """The same weights in an LM whose i-th mamba layer has ``per_layer[i]`` on top of its
    options (and scan='torch': the fused kernel has neither mitigation)."""
    layers = tuple(LayerSpec(s.mixer, {**s.options, "scan": "torch", **o})
                   for s, o in zip(model.cfg.layers, per_layer))
    new = LM(dataclasses.replace(model.cfg, layers=layers))
    new.load_state_dict(model.state_dict())
    return new.eval()


@torch.no_grad()
def channel_norm_peaks(model: LM, args, batches: int = 2) -> list[list[float]]:
    """Per layer, each channel's largest state norm over training-length validation sequences.

    The state after every token is read by feeding the sequence one token at a time
    (the faces are equal, so this is the state the parallel face passes through).
    """
    probe = probes.build("passkey", seq_len=args.train_len, num_digits=args.digits)
    peaks = None
    for i in range(batches):
        tokens = probe.batch("val", i, 32).inputs
        state = None
        for t in range(tokens.shape[1]):
            _, state = model.features(tokens[:, t:t + 1], state)
            norms = torch.stack([s.h.norm(dim=-1).amax(0) for s in state.layers])   # (layers, E)
            peaks = norms if peaks is None else torch.maximum(peaks, norms)
    return peaks.tolist()


def score(model: LM, args, lengths: list[int]) -> dict[str, list[float | None]]:
    """Per-digit accuracy per depth at each length; once a depth has failed at two lengths
    in a row, longer lengths are not scored (None) for it."""
    out: dict[str, list[float | None]] = {}
    for name, depth in DEPTHS.items():
        accs, fails = [], 0
        for n in lengths:
            if fails >= 2:
                accs.append(None)
                continue
            probe = probes.build("passkey", seq_len=n, num_digits=args.digits, depth=depth)
            acc = evaluate_probe(model, probe, batches=args.eval_batches, batch_size=32)["accuracy"]
            accs.append(acc)
            fails = fails + 1 if acc < args.threshold else 0
        out[name] = accs
    return out


def longest_solved(accs: list[float | None], lengths: list[int], threshold: float) -> int:
    """The longest length with accuracy >= threshold there and at every shorter one; 0 if none."""
    best = 0
    for n, a in zip(lengths, accs):
        if a is None or a < threshold:
            break
        best = n
    return best


def run_one(args, d_state: int, lengths: list[int]) -> dict:
    t0 = time.perf_counter()
    cell = cell_for(args, d_state)
    probe = cell.build_probe()
    torch.manual_seed(cell.seed)
    model = build_model(cell, probe)
    fit = fit_probe(model, probe, cell.train, seed=cell.seed)
    model.eval()
    peaks = channel_norm_peaks(model, args)
    lam = 2.0 ** (-1.0 / (args.decay_half_life * args.train_len))
    forms = {
        "none": model,
        "state_norm": with_mamba_options(
            model, [{"state_norm": tuple(args.norm_mult * max(p, 1e-6) for p in layer)} for layer in peaks]),
        "decay_scale": with_mamba_options(model, [{"decay_scale": lam}] * len(model.cfg.layers)),
    }
    variants = {}
    for name, m in forms.items():
        t1 = time.perf_counter()
        accs = score(m, args, lengths)
        variants[name] = {"accuracy": accs, "score_s": time.perf_counter() - t1,
                          "longest": {k: longest_solved(v, lengths, args.threshold) for k, v in accs.items()}}
    return {"d_state": d_state, "train_steps": fit.steps, "reached_99_at": fit.reached_at,
            "train_s": fit.train_s, "decay_scale": lam,
            "state_norm_peaks": {"max": [max(p) for p in peaks],
                                 "median": [sorted(p)[len(p) // 2] for p in peaks]},
            "variants": variants, "wall_s": time.perf_counter() - t0}


def print_table(runs: list[dict], args) -> None:
    print(f"\nLongest passkey length solved (per-digit accuracy >= {args.threshold:g} there and at every "
          f"shorter length; trained at {args.train_len}, {args.digits} digits, lengths up to {args.max_len})")
    cols = ["d_state", "steps", *(f"{v}: {d}" for v in VARIANTS for d in DEPTHS)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * 2 + "---:|" * (len(cols) - 2))
    for r in runs:
        cells = [str(r["d_state"]), f"{r['train_steps']}" + ("" if r["reached_99_at"] else " (not 99%)")]
        for v in VARIANTS:
            for d in DEPTHS:
                n = r["variants"][v]["longest"][d]
                cells.append(str(n) if n else "-")
        print("| " + " | ".join(cells) + " |")
    lengths = lengths_from(args.train_len, args.max_len)
    print("\nPer-digit accuracy by length (uniform depth / depth 1; '.' = not scored after two failures)")
    print("| d_state | form | " + " | ".join(str(n) for n in lengths) + " |")
    print("|---|---|" + "---:|" * len(lengths))
    for r in runs:
        for v in VARIANTS:
            acc = r["variants"][v]["accuracy"]
            pairs = [" / ".join("." if a is None else f"{a:.2f}" for a in (u, d))
                     for u, d in zip(acc["uniform"], acc["depth 1"])]
            print(f"| {r['d_state']} | {v} | " + " | ".join(pairs) + " |")


def plot(runs: list[dict], args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(DEPTHS), figsize=(5.2 * len(DEPTHS), 3.9), sharey=True)
    d_states = [r["d_state"] for r in runs]
    floor = args.train_len / 2   # "not even the training length" is drawn below it
    for ax, depth in zip(axes, DEPTHS):
        for i, (v, marker) in enumerate(zip(VARIANTS, "osD")):
            ys = [r["variants"][v]["longest"][depth] or floor for r in runs]
            shift = 2.0 ** (0.06 * (i - 1))   # side by side, so that equal values stay visible
            ax.plot([d * shift for d in d_states], ys, marker=marker, label=v)
        ax.axhline(args.train_len, color="grey", linestyle=":", label="training length")
        ax.axhline(args.max_len, color="grey", linestyle="--", label="longest tested")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(d_states, [str(d) for d in d_states])
        ax.set_xlabel("d_state")
        ax.set_title(f"key at {depth} depth" if depth == "uniform" else "key just before the query")
    axes[0].set_ylabel(f"longest length with accuracy >= {args.threshold:g}")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"mamba passkey capacity ({args.digits} digits, trained at {args.train_len})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)   # like passkey_collapse.py: single-threaded numbers, two sweeps side by side
    t0 = time.perf_counter()
    lengths = lengths_from(args.train_len, args.max_len)
    runs = []
    for d_state in args.d_states:
        run = run_one(args, d_state, lengths)
        print(f"d_state={d_state}: {run['train_steps']} steps in {run['train_s']:.0f} s, "
              f"scored in {sum(v['score_s'] for v in run['variants'].values()):.0f} s", flush=True)
        runs.append(run)
    print_table(runs, args)
    total = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                    "torch": torch.__version__, "settings": settings,
                                    "lengths": lengths, "runs": runs, "wall_s": total}, indent=1))
    png = args.out.with_suffix(".png")
    plot(runs, args, png)
    print(f"\nwrote {args.out} and {png} in {total:.0f} s")


if __name__ == "__main__":
    main()

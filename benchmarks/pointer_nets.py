"""Pointer networks (Vinyals et al. 2015) on sorting, planar convex hull and TSP, tested
beyond the training sizes.

One PointerNet per task is trained on instances of n = 5 ... 10 points (sizes mixed in
every batch), then decoded by the engine (greedy, and beam search) at n = 5, 10, 15, 20:
sort and hull score exact-sequence accuracy; TSP scores the mean tour length over the
optimal one (Held-Karp, n <= 10) and over the nearest-neighbour tour (every n). Sort and
TSP decode permutations (``mask_visited``); the hull decoder may stop anywhere.

    python benchmarks/pointer_nets.py            # ~9 CPU-minutes at 1 thread (507 CPU-s on the 2-core EPYC)
    python benchmarks/pointer_nets.py --quick    # ~1 minute: a smoke run
Writes benchmarks/out/pointer_nets.json, a plot (--plot, default
benchmarks/out/pointer_nets.png) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"
TASKS = ("sort", "hull", "tsp")


def train(task: str, args) -> tuple:
    from seqlab.models.pointer import IGNORE, PointerNet, PointerNetConfig, teacher_forcing
    from seqlab.tasks.pointer_tasks import input_dim, mixed_batch

    torch.manual_seed(0)
    cfg = PointerNetConfig(max_n=args.max_n, in_dim=input_dim(task), dim=args.dim,
                           encoder_layers=("lstm",) * args.layers,
                           decoder_layers=("lstm",) * args.layers, mlp_hidden=0,
                           mask_visited=task != "hull")
    model = PointerNet(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    rng = np.random.default_rng(1)
    model.train()
    t0, curve = time.process_time(), []
    bar = tqdm(range(args.steps), desc=f"train {task}", unit="step")
    for step in bar:
        sizes = rng.integers(args.train_min, args.train_max + 1, args.batch).tolist()
        points, n, targets = mixed_batch(task, sizes, 1000 + step, args.max_n)
        inputs, labels = teacher_forcing(targets, args.max_n)
        logits, _ = model(inputs, model.condition(points, n))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 25 == 0:
            curve.append({"step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, {"cpu_s": time.process_time() - t0, "curve": curve,
                   "params": sum(p.numel() for p in model.parameters())}


def evaluate(model, task: str, n: int, args) -> dict:
    """Per strategy the task's score on ``args.eval`` instances of size n."""
    from seqlab.models.pointer import decode
    from seqlab.tasks.pointer_tasks import (HELD_KARP_MAX_N, held_karp, make_batch,
                                            nearest_neighbour, random_points, tour_length)

    end = args.max_n
    if task == "tsp":
        if n <= HELD_KARP_MAX_N:
            b = make_batch(task, n, args.eval, 7, end)
            points = b.points.double().numpy()
            best = held_karp(points)[0]
        else:
            points, best = random_points(n, args.eval, 7), None
        x = torch.tensor(points, dtype=torch.float32)
        nn_len = tour_length(points, nearest_neighbour(points))
    else:
        b = make_batch(task, n, args.eval, 7, end)
        x = b.points
    out = {}
    for strategy, opts in (("greedy", {}), ("beam", {"num_beams": args.beams})):
        tokens = decode(model, x, strategy, **opts).tokens
        if task == "tsp":
            tours = [t[:-1] for t in tokens]
            assert all(sorted(t) == list(range(n)) for t in tours), "not a permutation"
            length = tour_length(points, tours)
            out[strategy] = {"vs_nn": float((length / nn_len).mean()),
                             "vs_opt": None if best is None else float((length / best).mean())}
        else:
            out[strategy] = {"accuracy": float(np.mean([t == y for t, y in
                                                        zip(tokens, b.targets)]))}
    if task == "tsp" and best is not None:
        out["nearest neighbour"] = {"vs_opt": float((nn_len / best).mean()), "vs_nn": 1.0}
    return out


def plot(results, sizes, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, task in zip(axes, TASKS):
        for strategy in ("greedy", "beam"):
            key = "vs_nn" if task == "tsp" else "accuracy"
            ax.plot(sizes, [results[task]["eval"][str(n)][strategy][key] for n in sizes],
                    marker="o", label=strategy)
        ax.axvspan(5, 10, color="0.9", label="training sizes")
        ax.set_xlabel("n (inputs)")
        ax.set_ylabel("tour length / nearest neighbour" if task == "tsp"
                      else "exact-sequence accuracy")
        ax.set_title(task)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--max-n", type=int, default=20, help="the model's largest instance")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-min", type=int, default=5)
    p.add_argument("--train-max", type=int, default=10)
    p.add_argument("--eval", type=int, default=200, help="instances per size")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--sizes", default="5,10,15,20")
    p.add_argument("--plot", default=str(OUT / "pointer_nets.png"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval, args.dim = 30, 20, 32
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    results, start = {}, time.process_time()
    for task in args.tasks.split(","):
        model, info = train(task, args)
        t0 = time.process_time()
        info["eval"] = {str(n): evaluate(model, task, n, args) for n in tqdm(sizes, desc="eval")}
        info["eval_cpu_s"] = time.process_time() - t0
        results[task] = info
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"{time.process_time() - start:.0f} CPU-s in all")
    for task, info in results.items():
        print(f"\n{task}: {info['params']:,} params, {args.steps} steps, train "
              f"{info['cpu_s']:.0f} CPU-s, eval {info['eval_cpu_s']:.0f} CPU-s")
        if task == "tsp":
            print("| n | greedy / opt | beam / opt | NN / opt | greedy / NN | beam / NN |")
            print("|---:|---:|---:|---:|---:|---:|")
            for n in sizes:
                e = info["eval"][str(n)]
                f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
                nn_opt = e.get("nearest neighbour", {}).get("vs_opt")
                print(f"| {n} | {f(e['greedy']['vs_opt'])} | {f(e['beam']['vs_opt'])} | "
                      f"{f(nn_opt)} | {e['greedy']['vs_nn']:.3f} | {e['beam']['vs_nn']:.3f} |")
        else:
            print(f"| n | greedy accuracy | beam ({args.beams}) accuracy |")
            print("|---:|---:|---:|")
            for n in sizes:
                e = info["eval"][str(n)]
                print(f"| {n} | {e['greedy']['accuracy']:.3f} | {e['beam']['accuracy']:.3f} |")
    if set(results) == set(TASKS):
        plot(results, sizes, Path(args.plot))
    OUT.mkdir(exist_ok=True)
    name = "pointer_nets_quick.json" if args.quick else "pointer_nets.json"
    (OUT / name).write_text(json.dumps({"args": vars(args), "cpu": platform.processor(),
                                        "threads": torch.get_num_threads(),
                                        "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput and peak memory of ~10M-parameter byte LMs, one per mixer plus a hybrid.

Every model has width 384 and as many layers as bring it closest to the
parameter target; all share batch, sequence length, optimizer and data (the
standard-library corpus). Each model runs in its own subprocess so that its
peak resident memory (ru_maxrss) is its own.

    python benchmarks/train.py                 # full table (~10 minutes on 2 cores)
    python benchmarks/train.py --quick         # seconds-long smoke run
Writes JSON lines to benchmarks/out/train.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HYBRID = ["mamba", "mamba", "attention"]


def candidates():
    import seqlab

    models = {name: [name] for name in seqlab.mixers.names()}
    models["hybrid (mamba,mamba,attention)"] = HYBRID
    return models


def size_model(pattern: list[str], dim: int, target: float) -> list[str]:
    """The pattern repeated to the layer count whose parameter count is closest to ``target``."""
    from seqlab.models import build_lm

    best, best_err = pattern, float("inf")
    for n in range(1, 40):
        layers = [pattern[i % len(pattern)] for i in range(n)]
        p = build_lm(dim=dim, layers=layers).num_parameters()
        if abs(p - target) < best_err:
            best, best_err = layers, abs(p - target)
        if p > target:
            break
    return best


def measure_one(spec: dict) -> dict:
    """Runs in a child process: time ``steps`` training steps after warm-up."""
    import torch

    from seqlab.models import build_lm
    from seqlab.tasks import load_corpus
    from seqlab.train.config import TrainConfig
    from seqlab.train.optim import make_optimizer

    torch.manual_seed(0)
    corpus = load_corpus(progress=False)
    model = build_lm(dim=spec["dim"], layers=spec["layers"])
    opt = make_optimizer(model, TrainConfig())
    B, T = spec["batch"], spec["seq_len"]
    times = []
    for step in range(spec["warmup"] + spec["steps"]):
        x, y = corpus.batch("train", step, B, T, seed=0)
        t0 = time.perf_counter()
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {"params": model.num_parameters(), "tokens_per_s": B * T / median,
            "step_s": median, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--params", type=float, default=10e6, help="parameter target per model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny models, 1 step: a smoke run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "train.jsonl"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_one(json.loads(args.child))))
        return
    if args.quick:
        args.dim, args.params, args.batch, args.seq_len, args.steps = 64, 2e5, 2, 64, 1
    from tqdm import tqdm

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    models = candidates()
    for label, pattern in tqdm(models.items(), desc="models", unit="model"):
        layers = size_model(pattern, args.dim, args.params)
        spec = {"dim": args.dim, "layers": layers, "batch": args.batch, "seq_len": args.seq_len,
                "warmup": 1 if args.quick else 2, "steps": args.steps}
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                           capture_output=True, text=True)
        if r.returncode:
            rec = {"model": label, "error": r.stderr.strip().splitlines()[-1]}
        else:
            rec = {"model": label, "layers": len(layers), **json.loads(r.stdout.strip().splitlines()[-1])}
        rec.update({"benchmark": "train", "dim": args.dim, "batch": args.batch, "seq_len": args.seq_len,
                    "torch_threads": os.cpu_count(), "machine": platform.processor() or platform.machine()})
        rows.append(rec)
    with out.open("a") as f:
        for rec in rows:
            f.write(json.dumps(rec) + "\n")
    print(f"\ntraining throughput, batch {args.batch} x {args.seq_len} bytes, width {args.dim}, "
          f"AdamW, float32, {os.cpu_count()} CPU threads")
    print(f"{'model':34s} {'layers':>6s} {'params':>10s} {'tokens/s':>10s} {'step s':>8s} {'peak RSS MiB':>13s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:34s} failed: {r['error']}")
            continue
        print(f"{r['model']:34s} {r['layers']:>6d} {r['params']:>10,} {r['tokens_per_s']:>10,.0f} "
              f"{r['step_s']:>8.3f} {r['peak_rss_mib']:>13,.0f}")
    print(f"\n{len(rows)} models in {time.perf_counter() - t_all:.0f} s; JSON lines appended to {out}")


if __name__ == "__main__":
    main()

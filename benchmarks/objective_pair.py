"""One recipe, two objectives (Ettin, "Seq vs Seq"): an encoder (MLM) and a decoder (CLM) of
the same size, data and steps, then each trained further under the other objective; every
model scored under both objectives on the validation split (issue 17 item 1).

    python benchmarks/objective_pair.py --threads 1 --out docs/results/objective_pair.json

Scores: masked-token bits per byte (MLM: 15% of positions, BERT's 80/10/10, fixed masks) and
next-token bits per byte (CLM), both from ``seqlab.train.trainer.evaluate``. Prints a table,
writes JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from seqlab.train.config import RunConfig
from seqlab.train.trainer import Trainer, evaluate


def run_config(args, out: Path, objective: str, steps: int, init: str | None = None) -> RunConfig:
    data = {
        "model": {"dim": args.dim, "layers": args.mixers, "mlp_hidden": 2 * args.dim},
        "train": {"steps": steps, "batch_size": 16, "seq_len": 256, "lr": args.lr, "warmup": 30,
                  "eval_every": 0, "eval_tokens": args.eval_tokens, "ckpt_every": 0,
                  "objective": objective},
        "out_dir": str(out)}
    if init is not None:
        data["init"] = init
    return RunConfig.from_dict(data)


def train(run: RunConfig) -> tuple[Trainer, float]:
    t0 = time.perf_counter()
    trainer = Trainer(run, progress=True)
    trainer.fit()
    trainer.close()
    return trainer, time.perf_counter() - t0


def scores(trainer: Trainer, args) -> dict:
    out = {}
    for objective in ("clm", "mlm"):
        if objective == "mlm" and trainer.model.vocab_size <= trainer.corpus.vocab_size:
            out[objective] = None     # a decoder never trained with a mask id cannot be asked
            continue
        ev = evaluate(trainer.model, trainer.corpus, 256, args.eval_tokens, 16, trainer.device,
                      objective=objective)
        out[objective] = ev["bpb"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--mixers", default="attention(heads=2)*4", help="layer pattern of both")
    p.add_argument("--steps", type=int, default=300, help="steps under the first objective")
    p.add_argument("--more", type=int, default=100, help="steps under the other objective")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--out", default="benchmarks/out/objective_pair.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    rows, t_all = [], time.perf_counter()
    for first, other in (("mlm", "clm"), ("clm", "mlm")):
        base, secs = train(run_config(args, root / first, first, args.steps))
        rows.append({"model": f"{first} {args.steps}", "seconds": secs, **scores(base, args)})
        print(json.dumps(rows[-1]), flush=True)
        for objective in (first, other):   # the same extra steps, native or switched
            more, secs = train(run_config(args, root / f"{first}-{objective}", objective,
                                          args.more, init=str(root / first)))
            rows.append({"model": f"{first} {args.steps} + {objective} {args.more}",
                         "seconds": secs, **scores(more, args)})
            print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t_all
    print(f"\n{args.mixers}, dim {args.dim}; {total:.0f} s at {args.threads} thread(s)\n")
    print("| model | CLM bpb (next byte) | MLM bpb (masked bytes) | train s |")
    print("|---|---:|---:|---:|")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for r in rows:
        print(f"| {r['model']} | {fmt(r['clm'])} | {fmt(r['mlm'])} | {r['seconds']:.0f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "seconds": total, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "clm", "next-byte bpb (CLM)"),
                           (axes[1], "mlm", "masked-byte bpb (MLM)")):
        kept = [r for r in rows if r[key] is not None]
        ax.barh([r["model"] for r in kept], [r[key] for r in kept],
                color=["tab:blue" if r["model"].startswith("mlm") else "tab:orange" for r in kept])
        ax.invert_yaxis()
        ax.set_xlabel(title + ", lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

"""HMT's memory at a fixed window: bits per byte by position in long documents, with and
without memory.

Two byte-level models are trained here on the default corpus (the Python standard
library's source) with the same backbone, window, optimizer, batches and steps: HMT
(``memories = N``) and its ablation without memory (``memories = 0``: every segment starts
from the same learned vector, so nothing before the window and its sensory tokens can
reach a prediction); the trained HMT is also scored with its memory switched off (the
same weights, ``memories = 0``). Then they read the longest modules of the validation split (files the
training never saw) from their start, and the bits per byte are reported by position
bucket: a memory that carries information past the window shows up as lower bpb late in a
document, at the same window.

    python benchmarks/hmt_memory.py             # ~15 minutes on one thread
    python benchmarks/hmt_memory.py --quick     # ~1 minute: tiny models
Writes benchmarks/out/hmt_memory.json, a plot (--plot, default benchmarks/out/hmt_memory.png)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"
BUCKETS = [0, 128, 512, 1024, 2048, 4096, 8192, 16384]


def build(args, memories: int):
    from seqlab.models.hmt import HMT, HMTConfig
    from seqlab.models.lm import LMConfig

    torch.manual_seed(0)
    backbone = LMConfig(vocab_size=256, dim=args.dim, layers=f"attention(heads=4)*{args.layers}",
                        max_length=None)
    return HMT(HMTConfig(backbone=backbone, segment=args.segment, sensory=args.sensory,
                         query=args.query, memories=memories, recall_dim=64,
                         recall_in=args.recall_in))


def train(model, corpus, args, name) -> dict:
    from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step

    cfg = OptimizerConfig(steps=args.steps, lr=args.lr, warmup=min(50, args.steps // 10))
    opt = make_optimizer(model, cfg)
    model.train()
    t0, losses = time.process_time(), []
    for step in tqdm(range(args.steps), desc=f"train {name}", unit="step"):
        x, y = corpus.batch("train", step, args.batch, args.seq_len, seed=1)

        def backward():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            loss.backward()
            return float(loss)

        losses.append(optimizer_step(model, opt, step, cfg, backward)[0])
    model.eval()
    return {"train_cpu_s": time.process_time() - t0, "final_loss": sum(losses[-20:]) / 20,
            "params": model.num_parameters()}


def long_documents(count: int, length: int) -> list[bytes]:
    """The first ``length`` bytes of the ``count`` longest validation-split modules."""
    from seqlab.tasks.corpus import longest_files

    docs = []
    for f in longest_files("val"):
        data = f.read_bytes()
        if len(data) >= length:
            docs.append(data[:length])
        if len(docs) == count:
            break
    return docs


@torch.no_grad()
def bits_by_position(model, docs: list[bytes]) -> list[float]:
    """Summed bits of each predicted byte (position p predicts byte p + 1), over ``docs``."""
    total = None
    for doc in tqdm(docs, desc="score", unit="doc", leave=False):
        ids = torch.tensor(list(doc))[None]
        logits, _ = model(ids[:, :-1])
        nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none")
        bits = nll / math.log(2)
        total = bits if total is None else total + bits
    return (total / len(docs)).tolist()


def bucketed(bits: list[float]) -> dict[str, float]:
    out = {}
    for lo, hi in zip(BUCKETS, BUCKETS[1:]):
        part = bits[lo:hi]
        if part:
            out[f"{lo}-{hi}"] = sum(part) / len(part)
    return out


def plot(rows, path: Path, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        keys = list(r["bpb_by_position"])
        ax.plot(range(len(keys)), list(r["bpb_by_position"].values()), marker="o", label=r["model"])
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30)
    ax.axvline(0.5, color="grey", lw=0.5)
    ax.set_xlabel(f"byte position in the document (window {args.segment} + {args.sensory} sensory)")
    ax.set_ylabel("bits per byte")
    ax.set_title("HMT: long validation modules, by position")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--segment", type=int, default=128)
    p.add_argument("--sensory", type=int, default=16)
    p.add_argument("--query", type=int, default=16)
    p.add_argument("--memories", type=int, default=16)
    p.add_argument("--recall-in", choices=("residual", "direct"), default="residual",
                   help="how the recalled memory enters the window (HMTConfig.recall_in)")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024, help="bytes per training window")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--docs", type=int, default=12, help="longest validation modules scored")
    p.add_argument("--doc-bytes", type=int, default=8192)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", default=str(OUT / "hmt_memory.png"))
    args = p.parse_args()
    if args.quick:
        args.dim, args.layers, args.segment, args.sensory, args.query = 32, 1, 32, 4, 4
        args.steps, args.batch, args.seq_len, args.docs, args.doc_bytes = 10, 2, 128, 2, 512

    from seqlab.tasks.corpus import load_corpus

    torch.set_num_threads(args.threads)
    corpus = load_corpus()
    docs = long_documents(args.docs, args.doc_bytes)
    start = time.perf_counter()
    rows = []
    for memories, name in ((args.memories, f"HMT (N={args.memories})"), (0, "no memory")):
        model = build(args, memories)
        row = {"model": name, **train(model, corpus, args, name)}
        t0 = time.process_time()
        bits = bits_by_position(model, docs)
        row["score_cpu_s"] = time.process_time() - t0
        row["bpb"] = sum(bits) / len(bits)
        row["bpb_by_position"] = bucketed(bits)
        rows.append(row)
        if memories:
            # The same weights with the memory switched off at test time: what the memory
            # itself adds, free of the two trainings' noise.
            off = build(args, 0)
            off.load_state_dict(model.state_dict())
            off.eval()
            bits = bits_by_position(off, docs)
            rows.append({"model": f"HMT (N={args.memories}), memory off at test",
                         "params": row["params"], "train_cpu_s": 0.0,
                         "bpb": sum(bits) / len(bits), "bpb_by_position": bucketed(bits)})
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"{time.perf_counter() - start:.0f} s in all; {len(docs)} validation modules x "
          f"{args.doc_bytes} bytes; window {args.segment} + {args.sensory} sensory bytes")
    keys = list(rows[0]["bpb_by_position"])
    print("| model | params | train CPU s | bpb | " + " | ".join(keys) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(keys))
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['train_cpu_s']:.0f} | {r['bpb']:.3f} | "
              + " | ".join(f"{v:.3f}" for v in r["bpb_by_position"].values()) + " |")
    plot(rows, Path(args.plot), args)
    OUT.mkdir(exist_ok=True)
    name = "hmt_memory_quick.json" if args.quick else "hmt_memory.json"
    (OUT / name).write_text(json.dumps({"args": vars(args), "cpu": platform.processor(),
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

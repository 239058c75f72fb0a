"""Block Transformer against a plain attention LM at matched quality: decode throughput and
cache bytes.

Both are byte-level LMs trained here on the default corpus (the Python standard library's
source) with the same optimizer, batch and sequence length. The Block Transformer trains
for ``--steps``; the plain LM then trains until its validation bits per byte reach the
block model's (at most ``--plain-max-steps``), which is the paper's comparison: equal
quality, then speed. With those weights: greedy decoding of 64 new tokens after prompts of
512 and 2048 bytes at batch 8 and 32, decode tokens/s (generate minus its prefill) and the
decode state's bytes per sequence, both models side by side in one run.

    python benchmarks/block_lm.py               # ~40 minutes on 2 cores
    python benchmarks/block_lm.py --reuse       # decode only, with the weights saved last time
    python benchmarks/block_lm.py --quick       # ~2 minutes: tiny training, batch 8 only
Writes benchmarks/out/block_lm.json, the weights under benchmarks/out/block_lm/, a plot
(--plot, default benchmarks/out/block_lm.png) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"


def models(args):
    from seqlab.models import BlockLM, BlockLMConfig, build_lm

    torch.manual_seed(0)
    block = BlockLM(BlockLMConfig(vocab_size=256, block_size=args.block_size, embed_dim=64,
                                  dim=args.dim, layers=f"attention(heads=4)*{args.layers}",
                                  local_dim=args.dim,
                                  local_layers=f"attention(heads=4)*{args.local_layers}"))
    torch.manual_seed(0)
    plain = build_lm(vocab_size=256, dim=args.dim, layers=f"attention(heads=4)*{args.layers}",
                     max_length=None)
    return {f"block (L={args.block_size})": block, "plain attention LM": plain}


def validation_bpb(model, windows) -> float:
    from seqlab.tasks.corpus import bits_per_byte

    was = model.training
    model.eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for chunk in windows.split(16):
            logits, _ = model(chunk[:, :-1])
            nll += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, 256), chunk[:, 1:].reshape(-1), reduction="sum"))
            n += chunk[:, 1:].numel()
    model.train(was)
    return bits_per_byte(nll, n)


def train(model, corpus, windows, args, name, steps: int, target: float | None = None) -> dict:
    """Train for ``steps`` (stopping early once validation bpb <= ``target``); the curve of
    (step, bpb, training seconds) at every evaluation."""
    from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step

    cfg = OptimizerConfig(steps=steps, lr=2e-3, warmup=min(50, steps // 10))
    opt = make_optimizer(model, cfg)
    model.train()
    curve, train_s = [], 0.0
    bar = tqdm(range(steps), desc=f"train {name}", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        x, y = corpus.batch("train", step, args.batch, args.seq_len, seed=1)

        def backward():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            loss.backward()
            return float(loss)

        optimizer_step(model, opt, step, cfg, backward)
        train_s += time.perf_counter() - t0
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            bpb = validation_bpb(model, windows)
            curve.append({"step": step + 1, "bpb": bpb, "train_s": train_s})
            bar.set_postfix(bpb=f"{bpb:.3f}")
            if target is not None and bpb <= target:
                break
    bar.close()
    model.eval()
    return {"val_bpb": curve[-1]["bpb"], "steps": curve[-1]["step"], "train_s": train_s,
            "curve": curve,
            "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def decode(model, corpus, batch: int, context: int, new: int) -> dict:
    import seqlab.decoding as decoding

    data = corpus.val
    prompts = [data[i * 997: i * 997 + context].astype("int64").tolist() for i in range(batch)]
    with torch.no_grad():
        t0 = time.perf_counter()
        _, state = model(torch.tensor(prompts))
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = decoding.generate(model, prompts, "greedy", new)
        total = time.perf_counter() - t0
    return {"decode_tok_s": batch * new / max(total - prefill, 1e-9),
            "state_bytes_per_seq": state.nbytes() // batch,
            "new_tokens": sum(len(t) for t in out.tokens)}


def plot(rows, path: Path, decode_cols) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        a.plot([c["step"] for c in r["curve"]], [c["bpb"] for c in r["curve"]], marker=".",
               label=f"{r['model']} ({r['params'] / 1e6:.1f}M)")
    a.set_xlabel("training step")
    a.set_ylabel("validation bits per byte")
    a.set_title("training to matched quality")
    a.legend()
    width = 0.4
    for i, r in enumerate(rows):
        xs = [j + (i - 0.5) * width for j in range(len(decode_cols))]
        b.bar(xs, [r[c] for c in decode_cols], width, label=r["model"])
    b.set_xticks(range(len(decode_cols)))
    b.set_xticklabels([c.replace("decode_", "").replace("_tok_s", "").replace("_", " ")
                       for c in decode_cols])
    b.set_ylabel("decode tokens/s (greedy)")
    b.set_yscale("log")
    b.set_title("decode throughput by batch and context")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reuse", action="store_true", help="load the weights of the last full run")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--local-layers", type=int, default=4)
    p.add_argument("--block-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=600, help="training steps of the block model")
    p.add_argument("--plain-max-steps", type=int, default=1200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=60_000)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--plot", default=str(OUT / "block_lm.png"))
    p.add_argument("--train-only", action="store_true", help="train and save; decode later with --reuse")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    if args.quick:
        args.steps, args.plain_max_steps, args.eval_every = 30, 60, 10
        args.eval_tokens, args.dim, args.layers, args.local_layers = 10_000, 64, 2, 2
    batches, contexts = ((8,), (512, 2048)) if args.quick else ((8, 32), (512, 2048))

    from seqlab.models import load, save
    from seqlab.tasks.corpus import load_corpus

    torch.set_num_threads(args.threads)
    corpus = load_corpus()
    windows = corpus.eval_windows(args.seq_len, args.eval_tokens)
    saved = OUT / ("block_lm_quick" if args.quick else "block_lm")
    start = time.perf_counter()
    built = models(args)
    rows, target = [], None
    previous = json.loads((OUT / "block_lm.json").read_text()) if args.reuse else None
    for i, (name, model) in enumerate(built.items()):
        if args.reuse:
            model = load(saved / f"model{i}")
            row = {**next(r for r in previous["rows"] if r["model"] == name)}
            row = {k: v for k, v in row.items() if not k.startswith(("decode_", "state_bytes"))}
        else:
            steps = args.steps if target is None else args.plain_max_steps
            row = {"model": name, **train(model, corpus, windows, args, name, steps, target)}
            save(model, saved / f"model{i}")
        target = row["val_bpb"] if target is None else target
        rows.append(row)
        if args.train_only:
            continue
        for B in batches:
            for ctx in contexts:
                r = decode(model, corpus, B, ctx, args.new_tokens)
                row[f"decode_b{B}_c{ctx}_tok_s"] = r["decode_tok_s"]
                row[f"state_bytes_c{ctx}"] = r["state_bytes_per_seq"]
    if args.train_only:
        (OUT / "block_lm.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        print("trained and saved; decode with --reuse:",
              [(r["model"], r["steps"], round(r["val_bpb"], 3)) for r in rows])
        return
    cols = [k for k in rows[0] if k.startswith("decode_")]
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{time.perf_counter() - start:.0f} s in all")
    print("| model | params | steps | train s | val bpb | " + " | ".join(cols)
          + " | state bytes c512 | c2048 |")
    print("|---|---:|---:|---:|---:|" + "---:|" * (len(cols) + 2))
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['train_s']:.0f} | "
              f"{r['val_bpb']:.3f} | " + " | ".join(f"{r[c]:.0f}" for c in cols)
              + f" | {r['state_bytes_c512']:,} | {r['state_bytes_c2048']:,} |")
    blk, base = rows
    for c in cols:
        print(f"{c}: block / plain = {blk[c] / base[c]:.2f}x")
    print(f"state bytes c2048: plain / block = {base['state_bytes_c2048'] / blk['state_bytes_c2048']:.2f}x")
    plot(rows, Path(args.plot), cols)
    OUT.mkdir(exist_ok=True)
    name = "block_lm_quick.json" if args.quick else "block_lm.json"
    (OUT / name).write_text(json.dumps({"args": vars(args), "cpu": platform.processor(),
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Block Transformer against a plain attention LM: quality, decode throughput, cache bytes.

Both models are byte-level LMs trained here on the default corpus (the Python standard
library's source) with the same optimizer, batch and number of steps; validation bits per
byte are reported side by side (the paper matches perplexity by giving the Block
Transformer more parameters; here the budget is the same CPU time per step, roughly).
Then, with those weights, greedy decoding of 64 new tokens after prompts of 512 and 2048
bytes at batch 8 and 32: decode tokens/s (generate minus its prefill) and the decode state's
bytes per sequence.

    python benchmarks/block_lm.py            # ~25 minutes on 2 cores
    python benchmarks/block_lm.py --quick    # ~2 minutes: tiny training, batch 8 only
Writes benchmarks/out/block_lm.json and prints a table.
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
    plain = build_lm(vocab_size=256, dim=args.dim, layers=f"attention(heads=4)*{args.layers}",
                     max_length=None)
    torch.manual_seed(0)
    block = BlockLM(BlockLMConfig(vocab_size=256, block_size=args.block_size, embed_dim=64,
                                  dim=args.dim, layers=f"attention(heads=4)*{args.layers}",
                                  local_dim=args.dim,
                                  local_layers=f"attention(heads=4)*{args.local_layers}"))
    return {"plain attention LM": plain, f"block (L={args.block_size})": block}


def train(model, corpus, args, name) -> dict:
    from seqlab.tasks.corpus import bits_per_byte
    from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step

    cfg = OptimizerConfig(steps=args.steps, lr=2e-3, warmup=min(50, args.steps // 10))
    opt = make_optimizer(model, cfg)
    model.train()
    t0 = time.perf_counter()
    for step in tqdm(range(args.steps), desc=f"train {name}", unit="step"):
        x, y = corpus.batch("train", step, args.batch, args.seq_len, seed=1)

        def backward():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            loss.backward()
            return float(loss)

        optimizer_step(model, opt, step, cfg, backward)
    train_s = time.perf_counter() - t0
    model.eval()
    windows = corpus.eval_windows(args.seq_len, args.eval_tokens)
    nll, n = 0.0, 0
    with torch.no_grad():
        for chunk in windows.split(16):
            logits, _ = model(chunk[:, :-1])
            nll += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, 256), chunk[:, 1:].reshape(-1), reduction="sum"))
            n += chunk[:, 1:].numel()
    return {"val_bpb": bits_per_byte(nll, n), "train_s": train_s,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--local-layers", type=int, default=4)
    p.add_argument("--block-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=100_000)
    p.add_argument("--new-tokens", type=int, default=64)
    args = p.parse_args()
    if args.quick:
        args.steps, args.eval_tokens, args.dim, args.layers, args.local_layers = 40, 20_000, 128, 4, 2
    batches, contexts = ((8,), (512, 2048)) if args.quick else ((8, 32), (512, 2048))

    from seqlab.tasks.corpus import load_corpus

    torch.set_num_threads(os.cpu_count() or 1)
    corpus = load_corpus()
    rows = []
    start = time.perf_counter()
    for name, model in models(args).items():
        row = {"model": name, **train(model, corpus, args, name)}
        for B in batches:
            for ctx in contexts:
                r = decode(model, corpus, B, ctx, args.new_tokens)
                row[f"decode_b{B}_c{ctx}_tok_s"] = r["decode_tok_s"]
                row[f"state_bytes_c{ctx}"] = r["state_bytes_per_seq"]
        rows.append(row)
    cols = [k for k in rows[0] if k.startswith("decode_")]
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{time.perf_counter() - start:.0f} s in all")
    print("| model | params | val bpb | " + " | ".join(cols) + " | state bytes c512 | c2048 |")
    print("|---|---:|---:|" + "---:|" * (len(cols) + 2))
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['val_bpb']:.3f} | "
              + " | ".join(f"{r[c]:.0f}" for c in cols)
              + f" | {r['state_bytes_c512']:,} | {r['state_bytes_c2048']:,} |")
    base, blk = rows
    for c in cols:
        print(f"{c}: block / plain = {blk[c] / base[c]:.2f}x")
    OUT.mkdir(exist_ok=True)
    (OUT / "block_lm.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

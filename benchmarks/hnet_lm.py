"""H-Net (dynamic chunking) against a byte-level attention LM at equal training compute:
validation bits per byte, mean chunk length, and where the learned boundaries fall.

Both are byte-level LMs trained here on the default corpus (the Python standard library's
source) with the same optimizer, batch and sequence length. Equal compute means **equal
wall-clock training time on this machine** (``--budget`` seconds each, evaluation not
counted): the learning-rate schedule (warm-up, cosine decay) runs over the elapsed fraction
of the budget instead of over steps, so each model gets a full schedule in the same time
however fast its steps are (H-Net's change as its chunks grow). The table also gives each
model's matmul FLOPs per byte (weights only, attention's L^2 term left out; H-Net's main
network counted at the chunk rate it learned), so the match can be read in FLOPs too.

For H-Net, on the validation windows: mean chunk length (bytes per boundary), and the
share of chunks that start at, or right after, a whitespace or punctuation byte, against
the share of such bytes in the text (what boundaries placed at random would give).

    python benchmarks/hnet_lm.py               # ~25 minutes on 2 cores (--budget 600)
    python benchmarks/hnet_lm.py --quick       # ~2 minutes: tiny models, 30 s each
Writes benchmarks/out/hnet_lm.json, a plot (--plot, default benchmarks/out/hnet_lm.png)
and prints tables (``_quick`` names with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import string
import time
from pathlib import Path

import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"
WHITESPACE = set(b" \t\n\r\x0b\x0c")
PUNCTUATION = set(string.punctuation.encode())
NOMINAL_STEPS = 1000   # the schedule's resolution: lr at elapsed / budget of the way through


def models(args):
    from seqlab.models import HNet, HNetConfig, build_lm

    torch.manual_seed(0)
    hnet = HNet(HNetConfig(vocab_size=256, byte_dim=args.byte_dim,
                           encoder_layers=f"mamba*{args.byte_layers}",
                           decoder_layers=f"mamba*{args.byte_layers}", dim=args.main_dim,
                           layers=f"attention(heads={args.heads})*{args.main_layers}",
                           ratio_target=args.ratio_target, ratio_weight=args.ratio_weight))
    torch.manual_seed(0)
    plain = build_lm(vocab_size=256, dim=args.lm_dim,
                     layers=f"attention(heads={args.heads})*{args.lm_layers}")
    return {f"hnet (N={args.ratio_target:g})": hnet, "byte attention LM": plain}


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


def train(model, corpus, windows, args, name) -> dict:
    """Train for ``args.budget`` seconds (a time-based schedule); the curve of (step, bpb,
    training seconds) at every evaluation."""
    from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step

    cfg = OptimizerConfig(steps=NOMINAL_STEPS, lr=args.lr, warmup=NOMINAL_STEPS // 20)
    opt = make_optimizer(model, cfg)
    model.train()
    curve, train_s, step, next_eval = [], 0.0, 0, args.budget / args.evals
    bar = tqdm(total=args.budget, desc=f"train {name}",
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]")
    while train_s < args.budget:
        t0 = time.perf_counter()
        x, y = corpus.batch("train", step, args.batch, args.seq_len, seed=1)

        def backward():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            aux = getattr(model, "aux_loss", None)   # H-Net's ratio loss, as the trainer adds it
            (loss if aux is None else loss + aux).backward()
            return float(loss)

        at = min(NOMINAL_STEPS - 1, int(NOMINAL_STEPS * train_s / args.budget))
        optimizer_step(model, opt, at, cfg, backward)
        dt = time.perf_counter() - t0
        train_s, step = train_s + dt, step + 1
        bar.update(min(dt, args.budget - bar.n))
        if train_s >= next_eval or train_s >= args.budget:
            next_eval += args.budget / args.evals
            bpb = validation_bpb(model, windows)
            curve.append({"step": step, "bpb": bpb, "train_s": train_s})
            bar.set_postfix(bpb=f"{bpb:.3f}", step=step)
    bar.close()
    model.eval()
    return {"val_bpb": curve[-1]["bpb"], "steps": step, "train_s": train_s, "curve": curve,
            "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def chunking(model, windows) -> dict:
    """Where H-Net's boundaries fall on the validation windows (each window's forced first
    boundary left out)."""
    with torch.no_grad():
        _, b = model.boundaries(windows[:, :-1])
    text = windows[:, :-1]
    cur, prev = text[:, 1:], text[:, :-1]
    bnd = b[:, 1:]
    ws = torch.tensor([int(v) in WHITESPACE for v in range(256)])
    pu = torch.tensor([int(v) in PUNCTUATION for v in range(256)])
    n = int(bnd.sum())

    def share(mask):  # of the boundaries, and of all bytes
        return float(mask[bnd].float().sum() / max(n, 1)), float(mask.float().mean())

    out = {"mean_chunk_bytes": bnd.numel() / max(n, 1), "boundaries": n}
    for key, table in (("whitespace", ws), ("punctuation", pu)):
        out[f"at_{key}"], out[f"{key}_bytes"] = share(table[cur])
        out[f"after_{key}"], _ = share(table[prev])
    row = text[0, :160].tolist()
    out["sample"] = "".join(("|" if b[0, i] and i else "") + (chr(c) if 32 <= c < 127 else
                                                             "\\n" if c == 10 else "·")
                            for i, c in enumerate(row))
    return out


def matmul_flops_per_byte(model, chunk_rate: float | None) -> float:
    """2 x the weights each byte passes through (the tied head counted once, the embedding
    lookup not); H-Net's main network at ``chunk_rate`` chunks per byte."""
    def weights(module):
        return sum(p.numel() for n, p in module.named_parameters() if p.dim() == 2
                   and "embed" not in n)

    if chunk_rate is None:
        return 2.0 * (weights(model) + model.head.weight.numel())
    byte_level = weights(model) - weights(model.main) + model.head.weight.numel()
    return 2.0 * (byte_level + chunk_rate * weights(model.main))


def plot(rows, chunk: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        a.plot([c["train_s"] for c in r["curve"]], [c["bpb"] for c in r["curve"]], marker=".",
               label=f"{r['model']} ({r['params'] / 1e6:.1f}M)")
    a.set_xlabel("training seconds (equal budget)")
    a.set_ylabel("validation bits per byte")
    a.set_title("equal wall-clock training")
    a.legend()
    keys = ["whitespace", "punctuation"]
    xs = range(len(keys))
    w = 0.27
    b.bar([x - w for x in xs], [chunk[f"at_{k}"] for k in keys], w, label="chunk starts at")
    b.bar(list(xs), [chunk[f"after_{k}"] for k in keys], w, label="chunk starts right after")
    b.bar([x + w for x in xs], [chunk[f"{k}_bytes"] for k in keys], w, label="share of bytes")
    b.set_xticks(list(xs))
    b.set_xticklabels(keys)
    b.set_ylabel("share")
    b.set_title(f"H-Net boundaries (mean chunk {chunk['mean_chunk_bytes']:.2f} bytes)")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per model")
    p.add_argument("--evals", type=int, default=10, help="evaluations per model over the budget")
    p.add_argument("--byte-dim", type=int, default=256)
    p.add_argument("--byte-layers", type=int, default=2, help="mamba layers of encoder and decoder")
    p.add_argument("--main-dim", type=int, default=384)
    p.add_argument("--main-layers", type=int, default=6)
    p.add_argument("--lm-dim", type=int, default=384)
    p.add_argument("--lm-layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--ratio-target", type=float, default=6.0)
    p.add_argument("--ratio-weight", type=float, default=0.03)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=60_000)
    p.add_argument("--plot", default=None)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    if args.quick:
        args.budget, args.evals, args.eval_tokens = 30.0, 3, 8_000
        args.byte_dim, args.main_dim, args.lm_dim, args.heads = 64, 96, 96, 2
        args.byte_layers, args.main_layers, args.lm_layers = 1, 2, 2
        args.batch, args.seq_len = 8, 128
    stem = "hnet_lm_quick" if args.quick else "hnet_lm"
    plot_path = Path(args.plot or OUT / f"{stem}.png")

    from seqlab.tasks.corpus import load_corpus

    torch.set_num_threads(args.threads)
    corpus = load_corpus()
    windows = corpus.eval_windows(args.seq_len, args.eval_tokens)
    start = time.perf_counter()
    rows, chunk = [], None
    from seqlab.models import HNet

    for name, model in models(args).items():
        row = {"model": name, **train(model, corpus, windows, args, name)}
        if isinstance(model, HNet):
            chunk = chunking(model, windows)
            row["flops_per_byte"] = matmul_flops_per_byte(model, 1 / chunk["mean_chunk_bytes"])
        else:
            row["flops_per_byte"] = matmul_flops_per_byte(model, None)
        rows.append(row)
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{time.perf_counter() - start:.0f} s in all; equal wall-clock training budget "
          f"{args.budget:.0f} s per model (batch {args.batch} x {args.seq_len} bytes)")
    print("| model | params | steps | train s | bytes trained | matmul MFLOP/byte | val bpb |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['train_s']:.0f} | "
              f"{r['steps'] * args.batch * args.seq_len:,} | {r['flops_per_byte'] / 1e6:.2f} | "
              f"{r['val_bpb']:.3f} |")
    print(f"\nH-Net chunks on {chunk['boundaries']:,} validation boundaries: mean chunk "
          f"{chunk['mean_chunk_bytes']:.2f} bytes (target {args.ratio_target:g})")
    print("| byte class | chunks starting at one | chunks starting right after one | share of bytes |")
    print("|---|---:|---:|---:|")
    for k in ("whitespace", "punctuation"):
        print(f"| {k} | {chunk[f'at_{k}']:.1%} | {chunk[f'after_{k}']:.1%} | {chunk[f'{k}_bytes']:.1%} |")
    print(f"\nboundaries marked | in a validation window:\n{chunk['sample']}")
    plot(rows, chunk, plot_path)
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "cpu": platform.processor(),
                                                  "rows": rows, "chunking": chunk}, indent=2))


if __name__ == "__main__":
    main()

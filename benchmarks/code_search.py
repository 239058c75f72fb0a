"""Standard-library code search (docstring first line -> function): BM25, SmolLM2 as a
zero-shot embedder, SmolLM2 tuned, and a seqlab encoder (MLM) and decoder (CLM) of one size
and recipe, each tuned the same way, in one table (issue 17 item 3).

Data: seqlab.tasks.stdlib_functions (split by module; queries = first docstring lines,
documents = sources without docstrings, cut to --doc-bytes for every arm so all read the
same text). The pool is the whole test split. The seqlab models pre-train on the train
split's modules only (their files, docstrings included, never a test module) and tune on
train pairs; SmolLM2 tunes on --smollm-pairs train pairs.

    python benchmarks/code_search.py --threads 1 --out docs/results/code_search.json

Prints a table and writes JSON; --skip-smollm / --skip-seqlab run parts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from seqlab.models.embedder import EmbedConfig, Embedder
from seqlab.tasks.bm25 import bm25_scores
from seqlab.tasks.retrieval import rank_metrics
from seqlab.tasks.stdlib_functions import code_search_pairs, split_files
from seqlab.tokenizer import Tokenizer
from seqlab.train.contrastive import ContrastiveConfig, tune


def cut(text: str, n: int) -> str:
    return text.encode()[:n].decode("utf-8", "ignore")


def evaluate(name: str, emb: Embedder, queries, docs, extra=None) -> dict:
    t0 = time.perf_counter()
    q = emb.embed(queries, "query", progress=True)
    d = emb.embed(docs, "document", progress=True)
    m = rank_metrics(q @ d.T, list(range(len(queries))))
    row = {"arm": name, **m, "eval_s": time.perf_counter() - t0, **(extra or {})}
    print(json.dumps(row), flush=True)
    return row


def seqlab_arm(objective: str, args, test_q, test_d, train_q, train_d) -> list[dict]:
    """Pre-train a byte-level LM on the train modules under ``objective``, then tune it."""
    from seqlab.train.config import RunConfig
    from seqlab.train.trainer import Trainer

    files = [str(p) for p in split_files("train")]
    out = Path(tempfile.mkdtemp()) / objective
    run = RunConfig.from_dict({
        "model": {"dim": args.dim, "layers": [f"attention(heads={max(1, args.dim // 64)})"] * args.layers},
        "data": {"paths": files},
        "train": {"steps": args.pretrain_steps, "batch_size": 16, "seq_len": 256, "lr": 2e-3,
                  "warmup": 50, "eval_every": 0, "eval_tokens": 32768, "ckpt_every": 0,
                  "objective": objective},
        "out_dir": str(out)})
    t0 = time.perf_counter()
    trainer = Trainer(run, progress=True)
    result = trainer.fit()
    trainer.close()
    pretrain_s = time.perf_counter() - t0
    model = trainer.model.eval()
    mask = "bidirectional" if objective == "mlm" else "causal"
    name = {"mlm": "seqlab encoder (MLM)", "clm": "seqlab decoder (CLM)"}[objective]
    cfg = EmbedConfig(pooling="mean", mask=mask, max_tokens=args.doc_bytes, batch_size=32)
    emb = Embedder(model, Tokenizer(), cfg)
    info = {"params": model.num_parameters(), "pretrain_s": pretrain_s,
            "pretrain_bpb": result.evals[-1]["bpb"] if result.evals else None}
    rows = [evaluate(f"{name}, zero-shot", emb, test_q, test_d, info)]
    pick = random.Random(0).sample(range(len(train_q)), min(args.tune_pairs, len(train_q)))
    t0 = time.perf_counter()
    losses = tune(emb, [train_q[i] for i in pick], [train_d[i] for i in pick], ContrastiveConfig(
        steps=args.tune_steps, batch_size=16, lr=1e-3, hard_negatives=1,
        mine_every=args.mine_every))
    rows.append(evaluate(f"{name}, tuned", emb, test_q, test_d,
                         {**info, "tune_s": time.perf_counter() - t0,
                          "tune_loss": [losses[0], losses[-1]]}))
    return rows


def smollm_arms(args, test_q, test_d, train_q, train_d) -> list[dict]:
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    rows = []
    for pooling in ("mean", "prompt"):
        emb = Embedder(model, tok, EmbedConfig(pooling=pooling, mask="causal",
                                               max_tokens=args.smollm_tokens, batch_size=16))
        rows.append(evaluate(f"SmolLM2-135M zero-shot, {pooling} pooling", emb, test_q, test_d,
                             {"params": model.num_parameters()}))
    emb = Embedder(model, tok, EmbedConfig(pooling="prompt", mask="causal",
                                           max_tokens=args.smollm_tokens, batch_size=16))
    pick = random.Random(0).sample(range(len(train_q)), args.smollm_pairs)
    t0 = time.perf_counter()
    losses = tune(emb, [train_q[i] for i in pick], [train_d[i] for i in pick], ContrastiveConfig(
        steps=args.smollm_steps, batch_size=8, lr=5e-5, hard_negatives=1,
        mine_every=args.smollm_steps, train_layers=args.smollm_layers))
    rows.append(evaluate(f"SmolLM2-135M tuned (top {args.smollm_layers} blocks), prompt pooling",
                         emb, test_q, test_d,
                         {"params": model.num_parameters(), "tune_s": time.perf_counter() - t0,
                          "tune_loss": [losses[0], losses[-1]]}))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """MRR and recall@10 of each arm, one horizontal bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "recall@10" in r]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r["mrr"] for r in rows], height=0.4, label="MRR")
    ax.barh([i + 0.2 for i in y], [r["recall@10"] for r in rows], height=0.4, label="recall@10")
    ax.set_yticks(list(y), [r["arm"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("standard-library code search, test pool")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--doc-bytes", type=int, default=256, help="documents cut to this many bytes")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--tune-steps", type=int, default=60)
    p.add_argument("--tune-pairs", type=int, default=1024, help="train pairs the seqlab models "
                   "tune and mine hard negatives on")
    p.add_argument("--mine-every", type=int, default=30)
    p.add_argument("--smollm-tokens", type=int, default=96, help="SmolLM2 reads at most this many "
                   "tokens (prompt included)")
    p.add_argument("--smollm-pairs", type=int, default=128)
    p.add_argument("--smollm-steps", type=int, default=16)
    p.add_argument("--smollm-layers", type=int, default=4)
    p.add_argument("--skip-smollm", action="store_true")
    p.add_argument("--skip-seqlab", action="store_true")
    p.add_argument("--limit", type=int, help="a smaller test pool (a quick check)")
    p.add_argument("--out", default="benchmarks/out/code_search.json")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="only draw the PNG (beside --out) "
                   "from these results: this script's JSON or JSON lines of rows")
    args = p.parse_args()
    if args.plot:
        rows = []
        for f in args.plot:
            text = Path(f).read_text()
            rows += json.loads(text)["rows"] if f.endswith(".json") else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
        seen = set()
        rows = [r for r in rows if not (r["arm"] in seen or seen.add(r["arm"]))]
        plot(rows, Path(args.out).with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    test_q, test_d = code_search_pairs("test")
    test_q, test_d = test_q[:args.limit], test_d[:args.limit]
    train_q, train_d = code_search_pairs("train")
    test_d = [cut(d, args.doc_bytes) for d in test_d]
    train_d = [cut(d, args.doc_bytes) for d in train_d]
    t_all = time.perf_counter()
    rows = [{"arm": "BM25 (bm25s)", **rank_metrics(bm25_scores(test_q, test_d),
                                                    list(range(len(test_q))))}]
    print(json.dumps(rows[0]), flush=True)
    rows.append({"arm": "chance", "mrr": sum(1 / r for r in range(1, len(test_q) + 1)) / len(test_q),
                 "recall@1": 1 / len(test_q), "mean_rank": (len(test_q) + 1) / 2})
    if not args.skip_seqlab:
        for objective in ("mlm", "clm"):
            rows += seqlab_arm(objective, args, test_q, test_d, train_q, train_d)
    if not args.skip_smollm:
        rows += smollm_arms(args, test_q, test_d, train_q, train_d)
    total = time.perf_counter() - t_all
    print(f"\ntest pool {len(test_q)} functions (documents cut to {args.doc_bytes} bytes); "
          f"{total:.0f} s at {args.threads} thread(s)\n")
    print(f"| arm | MRR | R@1 | R@5 | R@10 | mean rank | NDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f = lambda k, fmt=".3f": format(r[k], fmt) if k in r else "-"
        print(f"| {r['arm']} | {f('mrr')} | {f('recall@1')} | {f('recall@5')} | {f('recall@10')} "
              f"| {f('mean_rank', '.1f')} | {f('ndcg@10')} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "pool": len(test_q),
                                          "seconds": total, "rows": rows}, indent=1))
    plot(rows, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()

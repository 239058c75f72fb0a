"""BM25 on code search over the Python standard library: docstring first line -> function.

Each query (a docstring's first line) is scored against every candidate of its split (the
functions' sources without their docstrings), so the pool is the whole split; the relevant
candidate is the query's own function. Functions come from seqlab/tasks/stdlib_functions.py
(split by module), BM25 from seqlab/tasks/bm25.py (bm25s), the metrics from
seqlab/tasks/retrieval.py (ties ranked pessimistically).

    python benchmarks/code_search_bm25.py     # 16 s the first time (extraction), 7 s cached
Prints a table and writes benchmarks/out/code_search_bm25.json (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"
METRICS = ("mrr", "recall@1", "recall@5", "recall@10", "mean_rank", "ndcg@10")


def main() -> None:
    from seqlab.files import make_folder
    from seqlab.tasks.bm25 import bm25_scores
    from seqlab.tasks.retrieval import rank_metrics
    from seqlab.tasks.stdlib_functions import SPLITS, code_search_pairs, load_functions

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT / "code_search_bm25.json"), help="JSON results")
    p.add_argument("--splits", default="validation,test", help="splits to score")
    args = p.parse_args()
    t0 = time.perf_counter()
    fns = load_functions()
    load_s = time.perf_counter() - t0
    sizes = {s: sum(f.split == s for f in fns) for s in SPLITS}
    results = {}
    for split in args.splits.split(","):
        queries, candidates = code_search_pairs(split)
        t = time.perf_counter()
        scores = bm25_scores(queries, candidates)
        m = rank_metrics(scores, np.arange(len(queries)), ks=(1, 5, 10))
        results[split] = {"pool": len(candidates), "seconds": time.perf_counter() - t,
                          "chance_mrr": float(np.mean(1 / np.arange(1, len(candidates) + 1))),
                          **m}

    print(f"\nPython {platform.python_version()} stdlib: {len(fns):,} functions, "
          f"{len({f.module for f in fns})} modules (loaded in {load_s:.1f} s)")
    print("| split | pairs | modules |\n|---|---:|---:|")
    for s in SPLITS:
        print(f"| {s} | {sizes[s]:,} | {len({f.module for f in fns if f.split == s})} |")
    print("\nBM25 (bm25s, k1 = 1.5, b = 0.75), all candidates of the split as the pool:")
    print("| split | pool | MRR | R@1 | R@5 | R@10 | mean rank | NDCG@10 | chance MRR |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for split, r in results.items():
        print(f"| {split} | {r['pool']} | " + " | ".join(
            f"{r[k]:.1f}" if k == "mean_rank" else f"{r[k]:.3f}" for k in METRICS)
            + f" | {r['chance_mrr']:.3f} |")
    out = Path(args.out)
    make_folder(out.parent, "--out", SystemExit)
    out.write_text(json.dumps({"python": sys.version, "machine": platform.machine(),
                               "functions": len(fns), "split_sizes": sizes,
                               "load_seconds": load_s, "bm25": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""ADED's persistent n-gram table on SmolLM2-135M (issue 16 item 3): does a table kept across
requests draft better than one per request, and than prompt lookup?

Requests: --requests functions of the standard library's test split (seqlab.tasks.
stdlib_functions; sources without docstrings), each prompted with its first --prompt-tokens
tokens and continued greedily for --new-tokens tokens, one request at a time, in a fixed
order. Arms: greedy; prompt lookup; ``ngram`` with a table per request; ``ngram`` with one
``NGramTable`` handed to every request (``draft=table``). Every arm's output equals greedy's
(checked). Reported: target calls per new token, tokens per call for the first and second
half of the requests (a persistent table should improve with use), and wall time against
greedy, side by side in one run.

    python benchmarks/aded_persistence.py --threads 1 --out docs/results/aded_persistence.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import seqlab
from seqlab.decoding.drafters import NGramTable
from seqlab.tasks.stdlib_functions import code_search_pairs


def request_prompts(tok, count: int, prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of ``count`` test-split standard-library functions
    (source without docstring) long enough to continue: the requests of the ADED benchmarks."""
    _, sources = code_search_pairs("test")
    return [ids[:prompt_tokens] for ids in map(tok.encode, sources)
            if len(ids) >= prompt_tokens + 8][:count]


def plot(rows: list[dict], path: Path) -> None:
    """Tokens per target call over the requests (running mean), one line per drafting arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for r in rows:
        if r["arm"] == "greedy":
            continue
        per = r["per_request"]
        ax.plot(range(1, len(per) + 1), [sum(per[:i]) / i for i in range(1, len(per) + 1)],
                marker="o", ms=3, label=r["arm"])
    ax.set_xlabel("request")
    ax.set_ylabel("tokens per target call (running mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--prompt-tokens", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--out", default="benchmarks/out/aded_persistence.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    prompts = request_prompts(tok, args.requests, args.prompt_tokens)
    table = NGramTable()
    arms = {"greedy": ("greedy", lambda: {}),
            "prompt lookup": ("prompt-lookup", lambda: {"temperature": 0}),
            "ngram, table per request": ("ngram", lambda: {"temperature": 0}),
            "ngram, persistent table": ("ngram", lambda: {"temperature": 0, "draft": table})}
    reference, rows, t_all = None, [], time.perf_counter()
    for name, (strategy, options) in arms.items():
        outs, calls, new, secs = [], [], [], 0.0
        for prompt in prompts:
            t0 = time.perf_counter()
            out = seqlab.decoding.generate(model, [prompt], strategy, args.new_tokens, **options())
            secs += time.perf_counter() - t0
            outs.append(out.tokens[0])
            calls.append(out.stats.target_calls)
            new.append(len(out.tokens[0]))
        reference = reference or outs
        half = len(prompts) // 2
        rate = lambda a, b: sum(new[a:b]) / max(1, sum(calls[a:b]))
        rows.append({"arm": name, "equals_greedy": outs == reference, "calls": sum(calls),
                     "tokens_per_call": rate(0, len(prompts)), "first_half": rate(0, half),
                     "second_half": rate(half, len(prompts)), "seconds": secs,
                     "per_request": [n / c for n, c in zip(new, calls)]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_request"}), flush=True)
    greedy_s = rows[0]["seconds"]
    total = time.perf_counter() - t_all
    print(f"\nSmolLM2-135M, {len(prompts)} requests of {args.prompt_tokens} prompt tokens, "
          f"{args.new_tokens} new; {total:.0f} s at {args.threads} thread(s); persistent table "
          f"{len(table):,} entries at the end\n")
    print("| arm | = greedy | tokens/call | first half | second half | speed vs greedy |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['equals_greedy']} | {r['tokens_per_call']:.2f} | "
              f"{r['first_half']:.2f} | {r['second_half']:.2f} | {greedy_s / r['seconds']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "seconds": total, "table_entries": len(table),
                               "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

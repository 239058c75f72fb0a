"""ADED's tri-gram table drafting trees (issue 16 item 3) on SmolLM2-135M: do trees from the
persistent table accept more per target call than its chains, and than prompt lookup, and
is that faster than greedy?

Requests as in ``benchmarks/aded_persistence.py``: --requests functions of the standard
library's test split (seqlab.tasks.stdlib_functions; sources without docstrings), each
prompted with its first --prompt-tokens tokens and continued greedily for --new-tokens
tokens, one request at a time (batch 1), in a fixed order. Arms: greedy; prompt lookup;
``ngram`` chains with a table per request and with one persistent ``NGramTable``;
``ngram-tree`` with one persistent table per arm for each --shapes tree shape (verified with
tree attention). Every arm's output is checked against greedy's, request by request.

Reported per arm: tokens/s and speed-up over greedy (wall time of the generate calls),
accepted draft tokens per verification call, new tokens per target call (all requests, and
the first and second half of them), draft nodes per call, and the acceptance against the
number of calls (per call, in the order the calls were made across the requests), plotted
as a running mean beside tokens per call per request.

    python benchmarks/aded_trees.py --threads 1 --out docs/results/aded_trees.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

import seqlab
from seqlab.decoding.drafters import NGramTable

from aded_persistence import request_prompts   # the same requests as the chain benchmark


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def arms(shapes: list[tuple[int, ...]]) -> dict[str, tuple[str, Callable[[], dict]]]:
    """Arm name -> (strategy, a function giving each request's options). A persistent arm's
    table is made once, so every request of the arm reads and extends the same one."""
    out = {"greedy": ("greedy", lambda: {}),
           "prompt lookup": ("prompt-lookup", lambda: {"temperature": 0}),
           "ngram chain, table per request": ("ngram", lambda: {"temperature": 0})}
    chain_table = NGramTable()
    out["ngram chain, persistent"] = ("ngram", lambda: {"temperature": 0, "draft": chain_table})
    for shape in shapes:
        table = NGramTable()
        out[f"ngram-tree {','.join(map(str, shape))}, persistent"] = (
            "ngram-tree", lambda t=table, s=shape: {"temperature": 0, "draft": t, "branching": s})
    return out


def run_arm(model, prompts, strategy: str, options, new_tokens: int, reference) -> dict:
    """Decode every prompt in order with one arm; its figures and per-call acceptance."""
    outs, secs, verify, drafted, per_call, calls, new = [], 0.0, 0, 0, [], [], []
    for prompt in prompts:
        t0 = time.perf_counter()
        out = seqlab.decoding.generate(model, [prompt], strategy, new_tokens, **options())
        secs += time.perf_counter() - t0
        st = out.stats
        outs.append(out.tokens[0])
        verify += st.verify_calls
        drafted += st.drafted
        per_call += [r[0] for r in st.accepted]     # batch 1: one row per round
        calls.append(st.target_calls)
        new.append(st.new_tokens)
    equal = reference is None or outs == reference
    half = len(prompts) // 2
    return {"outputs": outs, "equals_greedy": equal, "seconds": secs,
            "target_calls": sum(calls), "verify_calls": verify, "new_tokens": sum(new),
            "tokens_per_s": sum(new) / secs, "tokens_per_call": sum(new) / sum(calls),
            "first_half": sum(new[:half]) / sum(calls[:half]),
            "second_half": sum(new[half:]) / sum(calls[half:]),
            "accepted_per_call": sum(per_call) / max(verify, 1),
            "nodes_per_call": drafted / max(verify, 1), "per_call": per_call,
            "per_request": [n / c for n, c in zip(new, calls)]}


def plot(rows: list[dict], path: Path) -> None:
    """Left: accepted draft tokens per call, running mean over the calls in the order made
    (all requests one after another). Right: new tokens per target call per request,
    running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in rows:
        if r["arm"] == "greedy":
            continue
        pc, pr = r["per_call"], r["per_request"]
        ax.plot(range(1, len(pc) + 1), [sum(pc[:i]) / i for i in range(1, len(pc) + 1)],
                label=r["arm"], lw=1.2)
        bx.plot(range(1, len(pr) + 1), [sum(pr[:i]) / i for i in range(1, len(pr) + 1)],
                marker="o", ms=3, label=r["arm"])
    ax.set_xlabel("verification call (all requests in order)")
    ax.set_ylabel("accepted draft tokens per call\n(running mean)")
    bx.set_xlabel("request")
    bx.set_ylabel("new tokens per target call\n(running mean)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--shapes", nargs="+", type=_shape, default=[(3, 2, 1, 1, 1, 1),
                                                                 (2, 2, 2, 1, 1, 1, 1, 1)],
                   help="ngram-tree branchings, e.g. 3,2,1,1,1,1 2,2,2,1,1,1,1,1")
    p.add_argument("--out", default="benchmarks/out/aded_trees.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    prompts = request_prompts(tok, args.requests, args.prompt_tokens)
    reference, rows, t_all = None, [], time.perf_counter()
    for name, (strategy, options) in arms(args.shapes).items():
        r = run_arm(model, prompts, strategy, options, args.new_tokens, reference)
        reference = reference or r["outputs"]
        rows.append({"arm": name, "strategy": strategy,
                     **{k: v for k, v in r.items() if k != "outputs"}})
        print(json.dumps({k: v for k, v in rows[-1].items()
                          if k not in ("per_call", "per_request")}), flush=True)
    total = time.perf_counter() - t_all
    greedy = rows[0]
    for r in rows:
        r["speedup"] = greedy["seconds"] / r["seconds"]
    print(f"\nSmolLM2-135M, {len(prompts)} requests of {args.prompt_tokens} prompt tokens, "
          f"{args.new_tokens} new, batch 1; {total:.0f} s at {args.threads} thread(s)\n")
    print("| arm | = greedy | target calls | accepted / call | tokens / target call | first half "
          "| second half | draft nodes / call | ms / target call | tokens/s | vs greedy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {'yes' if r['equals_greedy'] else 'NO'} | {r['target_calls']} "
              f"| {r['accepted_per_call']:.2f} | {r['tokens_per_call']:.2f} | {r['first_half']:.2f} "
              f"| {r['second_half']:.2f} | {r['nodes_per_call']:.1f} "
              f"| {1000 * r['seconds'] / r['target_calls']:.0f} | {r['tokens_per_s']:.2f} "
              f"| {r['speedup']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {**vars(args), "shapes": [list(s) for s in args.shapes]},
                               "seconds": total, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Conditional beam search on SmolLM2-135M (issue 16 item 6; "Making the Most of your Model"):
beam search against beam search on p(output | not degenerate).

Prompts: the first --prompt-tokens tokens of prose paragraphs from the standard library's
docstrings (seqlab.tasks.stdlib_prose), split into --train prompts and --eval held-out ones.
1. The model continues every training prompt --new-tokens tokens, greedily and by sampling
   (temperature 1, top-p 0.95); each continuation is labelled degenerate (an n-gram of
   --ngram tokens repeated --repeats times, or empty) or acceptable.
2. An acceptability head is fitted on those labels (seqlab.decoding.conditioned.train_head).
3. On the held-out prompts: beam search (--beams) on the model, and on Conditioned(model,
   head): the share of degenerate outputs, distinct-2, the model's mean log-probability per
   token of the outputs, and seconds per prompt.

    python benchmarks/conditional_beam.py --threads 1 --out docs/results/conditional_beam.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import seqlab
from seqlab.decoding.conditioned import Conditioned, degenerate, train_head
from seqlab.tasks.stdlib_prose import prose_paragraphs


@torch.no_grad()
def mean_logprob(model, prompt: list[int], new: list[int]) -> float:
    if not new:
        return float("nan")
    logits, _ = model(torch.tensor([prompt + new]))
    lp = torch.log_softmax(logits[0, len(prompt) - 1:-1].float(), -1)
    return lp.gather(1, torch.tensor(new)[:, None]).mean().item()


def distinct2(tokens: list[int]) -> float:
    grams = list(zip(tokens, tokens[1:]))
    return len(set(grams)) / max(1, len(grams))


def plot(rows: list[dict], path: Path) -> None:
    """Degenerate share, distinct-2 and mean log-probability per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("degenerate", "distinct-2", "mean logprob/token")
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax, key in zip(axes, keys):
        ax.bar([r["strategy"] for r in rows], [r[key] for r in rows], color=["tab:gray", "tab:blue"])
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--eval", type=int, default=24)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--ngram", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--head-steps", type=int, default=300)
    p.add_argument("--out", default="benchmarks/out/conditional_beam.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    paras = prose_paragraphs()
    random.Random(0).shuffle(paras)
    prompts = [ids[:args.prompt_tokens] for ids in map(tok.encode, paras)
               if len(ids) >= args.prompt_tokens][:args.train + args.eval]
    train, held = prompts[:args.train], prompts[args.train:]
    t_all = time.perf_counter()
    bad = lambda cont: degenerate(cont, args.ngram, args.repeats)
    seqs, starts, labels = [], [], []
    for strategy, options in (("greedy", {}), ("sample", {"temperature": 1.0, "top_p": 0.95, "seed": 0})):
        for i in range(0, len(train), 16):
            rows = train[i:i + 16]
            out = seqlab.decoding.generate(model, rows, strategy, args.new_tokens,
                                           eos_id=tok.eos_id, **options)
            for prompt, cont in zip(rows, out.tokens):
                if cont:
                    seqs.append(prompt + list(cont)), starts.append(len(prompt))
                    labels.append(not bad(cont))
    collect_s = time.perf_counter() - t_all
    print(f"{len(seqs)} continuations, {labels.count(False)} degenerate ({collect_s:.0f} s)", flush=True)
    t0 = time.perf_counter()
    head = train_head(model, seqs, starts, labels, steps=args.head_steps, lr=3e-3)
    head_s = time.perf_counter() - t0
    rows = []
    for name, target in (("beam", model), ("conditional beam", Conditioned(model, head, args.weight))):
        outs, t0 = [], time.perf_counter()
        for prompt in held:
            outs.append(list(seqlab.decoding.generate(target, [prompt], "beam", args.new_tokens,
                                                      num_beams=args.beams,
                                                      eos_id=tok.eos_id).tokens[0]))
        secs = (time.perf_counter() - t0) / len(held)
        lps = [lp for lp in (mean_logprob(model, pr, o) for pr, o in zip(held, outs)) if lp == lp]
        rows.append({"strategy": name, "degenerate": sum(map(bad, outs)) / len(outs),
                     "distinct-2": sum(map(distinct2, outs)) / len(outs),
                     "mean logprob/token": sum(lps) / max(1, len(lps)), "s/prompt": secs,
                     "example": tok.decode(outs[0])})
        print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t_all
    print(f"\nSmolLM2-135M; head fitted on {len(seqs)} continuations of {len(train)} prompts "
          f"({labels.count(False)} degenerate) in {head_s:.0f} s; {len(held)} held-out prompts, "
          f"{args.new_tokens} new tokens, {args.beams} beams; {total:.0f} s at {args.threads} thread(s)\n")
    print("| strategy | degenerate | distinct-2 | mean log-prob / token | s/prompt |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['strategy']} | {r['degenerate']:.3f} | {r['distinct-2']:.3f} | "
              f"{r['mean logprob/token']:.3f} | {r['s/prompt']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "continuations": len(seqs),
                               "degenerate_continuations": labels.count(False),
                               "collect_s": collect_s, "head_s": head_s, "seconds": total,
                               "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

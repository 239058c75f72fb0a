"""Diverse beam search (Vijayakumar et al. 2016) reproduced on SmolLM2-135M: beam search
against DBS with 2 and 3 groups, each returning k hypotheses per prompt (issue 16 item 4).

Prompts are real English prose: paragraphs of the standard library's module docstrings
(>= 60 words); the prompt is a paragraph's first --prompt-tokens tokens, the reference its
next --new-tokens tokens. Per strategy:

- distinct-1 / distinct-2: unique n-grams over all n-grams of a prompt's k hypotheses;
- oracle BLEU: the best sentence BLEU (sacrebleu) of the k against the reference;
- top-1 log-probability: the model's summed log-probability of the best hypothesis
  (re-scored teacher-forced, the same way for every strategy);
- seconds per prompt.

    python benchmarks/diverse_beam.py --threads 1 --prompts 40 --out docs/results/diverse_beam.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import seqlab
from seqlab.tasks.stdlib_prose import prose_paragraphs


def distinct(hyps: list[list[int]], n: int) -> float:
    grams = [tuple(h[i:i + n]) for h in hyps for i in range(len(h) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


@torch.no_grad()
def logprob(model, prompt: list[int], new: list[int]) -> float:
    ids = torch.tensor([prompt + new])
    logits, _ = model(ids)
    lp = torch.log_softmax(logits[0, len(prompt) - 1:-1].float(), -1)
    return lp.gather(1, torch.tensor(new)[:, None]).sum().item()


def plot(rows: list[dict], path: Path) -> None:
    """Diversity (distinct-2), oracle BLEU and top-1 log-probability per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("distinct-2", "oracle BLEU", "top-1 logprob")
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, key in zip(axes, keys):
        ax.bar([r["strategy"] for r in rows], [r[key] for r in rows],
               color=["tab:gray", "tab:blue", "tab:orange"][:len(rows)])
        ax.set_title(key)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--prompt-tokens", type=int, default=40)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--k", type=int, default=6, help="beams = hypotheses returned per prompt")
    p.add_argument("--penalty", type=float, default=0.5, help="DBS diversity penalty (lambda)")
    p.add_argument("--out", default="benchmarks/out/diverse_beam.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import sacrebleu

    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    paras = prose_paragraphs()
    random.Random(0).shuffle(paras)
    items = []
    for para in paras:
        ids = tok.encode(para)
        if len(ids) >= args.prompt_tokens + args.new_tokens:
            items.append((ids[:args.prompt_tokens], ids[args.prompt_tokens:][:args.new_tokens]))
        if len(items) == args.prompts:
            break
    arms = {"beam": ("beam", {"num_beams": args.k, "num_return_sequences": args.k}),
            "DBS, 2 groups": ("diverse-beam", {"num_beams": args.k, "num_groups": 2,
                                               "diversity_penalty": args.penalty}),
            "DBS, 3 groups": ("diverse-beam", {"num_beams": args.k, "num_groups": 3,
                                               "diversity_penalty": args.penalty})}
    rows, t_all = [], time.perf_counter()
    for name, (strategy, options) in arms.items():
        d1, d2, oracle, top1, secs = [], [], [], [], 0.0
        for prompt, ref in items:
            t0 = time.perf_counter()
            out = seqlab.decoding.generate(model, [prompt], strategy, args.new_tokens,
                                           eos_id=tok.eos_id, **options)
            secs += time.perf_counter() - t0
            hyps = [list(h["tokens"]) for h in out.stats.nbest[0]][:args.k]
            d1.append(distinct(hyps, 1))
            d2.append(distinct(hyps, 2))
            reference = tok.decode(ref)
            oracle.append(max(sacrebleu.sentence_bleu(tok.decode(h), [reference]).score
                              for h in hyps))
            top1.append(logprob(model, prompt, list(out.tokens[0])))
        mean = lambda xs: sum(xs) / len(xs)
        rows.append({"strategy": name, "distinct-1": mean(d1), "distinct-2": mean(d2),
                     "oracle BLEU": mean(oracle), "top-1 logprob": mean(top1),
                     "s/prompt": secs / len(items), **options})
        print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t_all
    print(f"\nSmolLM2-135M, {len(items)} prompts of {args.prompt_tokens} tokens, {args.new_tokens} "
          f"new tokens, k = {args.k}; {total:.0f} s at {args.threads} thread(s)\n")
    print("| strategy | distinct-1 | distinct-2 | oracle BLEU | top-1 log-prob | s/prompt |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['strategy']} | {r['distinct-1']:.3f} | {r['distinct-2']:.3f} | "
              f"{r['oracle BLEU']:.2f} | {r['top-1 logprob']:.2f} | {r['s/prompt']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "seconds": total, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Hyperfitting ("The Hyperfitting Phenomenon") on SmolLM2-135M: fine-tune the pretrained
model to near-zero training loss on a few passages, then compare its greedy long generations
with the base model's greedy and top-p outputs (issue 16 item 5).

Passages are real English prose: paragraphs of the standard library's docstrings
(``seqlab.tasks.stdlib_prose``), shuffled with seed 0. The first --passages paragraphs of at
least --passage-tokens tokens (cut to that length) are the training set; the next --prompts
other paragraphs give the held-out prompts (their first --prompt-tokens tokens).

Training: AdamW (no weight decay) at --lr, batches of --batch passages, the next-token loss
over each whole passage, until an epoch's mean loss is below --target-loss, --max-epochs or
--train-minutes of wall time. --top-blocks N tunes the top N transformer blocks and the
final norm (the tied embedding/head and the blocks below stay frozen); -1 tunes every weight.

Generation (``seqlab.decoding.generate``, all prompts in one batch, no end-of-text stop, so
every continuation has exactly --new-tokens tokens): base greedy, base top-p (--top-p,
temperature 1, seeded) and hyperfitted greedy. Per condition:

- rep-4: share of a continuation's word 4-grams seen earlier in it (mean over prompts);
  rep-4 (tok): the same on tokenizer ids;
- TTR: distinct words / words per continuation (mean over prompts);
- distinct-2 / distinct-3: distinct word n-grams over all continuations;
- self-BLEU: sacrebleu sentence BLEU of each continuation against the others (13a tokens);
- base log-prob: mean per-token log-probability of the continuation under the base model;
- train 8-gram overlap: share of the continuation's token 8-grams found in the training set;
- seconds for the batch, tokens/s.
Words are whitespace tokens of the decoded text (``seqlab.tasks.text_metrics``).

    python benchmarks/hyperfitting.py --threads 1 --out docs/results/hyperfitting.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

import seqlab
from seqlab.tasks.stdlib_prose import prose_paragraphs
from seqlab.tasks.text_metrics import (distinct_n, ngrams, repetition_rate, self_bleu,
                                       type_token_ratio)


def split_passages(tok, passages: int, passage_tokens: int, prompts: int, prompt_tokens: int
                   ) -> tuple[list[list[int]], list[list[int]]]:
    """(training passages, held-out prompts) from disjoint standard-library paragraphs."""
    paras = prose_paragraphs()
    random.Random(0).shuffle(paras)
    train, held, used = [], [], set()
    for para in paras:
        if para in used:  # the same docstring paragraph can appear in two modules
            continue
        ids = tok.encode(para)
        if len(train) < passages and len(ids) >= passage_tokens:
            train.append(ids[:passage_tokens])
        elif len(train) == passages and len(ids) >= prompt_tokens:
            held.append(ids[:prompt_tokens])
        else:
            continue
        used.add(para)
        if len(held) == prompts:
            break
    return train, held


def trainable(model, top_blocks: int) -> list[torch.nn.Parameter]:
    """Freeze all but the top ``top_blocks`` blocks and the final norm (-1: tune everything)."""
    if top_blocks < 0:
        return [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for b in model.blocks[len(model.blocks) - top_blocks:] for p in b.parameters()]
    params += list(model.norm.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def lm_loss(model, batch: torch.Tensor) -> torch.Tensor:
    logits, _ = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())


def hyperfit(model, params, train: list[list[int]], args) -> dict:
    """Train until an epoch's mean loss < target, max epochs, or the time budget."""
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    data = torch.tensor(train)
    rng = random.Random(args.seed)
    steps_per_epoch = -(-len(train) // args.batch)
    step_losses, epoch_losses, t0 = [], [], time.perf_counter()
    model.train()
    bar = tqdm(total=args.max_epochs * steps_per_epoch, desc="hyperfitting", unit="step")
    stop = "max epochs"
    for epoch in range(args.max_epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), args.batch):
            loss = lm_loss(model, data[order[i:i + args.batch]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step_losses.append(losses[-1])
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        epoch_losses.append(sum(losses) / len(losses))
        minutes = (time.perf_counter() - t0) / 60
        if epoch_losses[-1] < args.target_loss:
            stop = f"epoch mean loss {epoch_losses[-1]:.4f} < {args.target_loss}"
            break
        # Stop before an epoch that would overrun the budget.
        if minutes * (epoch + 2) / (epoch + 1) > args.train_minutes:
            stop = f"time budget ({minutes:.1f} of {args.train_minutes} min used)"
            break
    bar.close()
    model.eval()
    with torch.no_grad():
        final = sum(lm_loss(model, data[i:i + args.batch]).item() * len(data[i:i + args.batch])
                    for i in range(0, len(train), args.batch)) / len(train)
    return {"step_losses": step_losses, "epoch_losses": epoch_losses, "final_train_loss": final,
            "epochs": len(epoch_losses), "steps": len(step_losses), "stopped": stop,
            "train_seconds": time.perf_counter() - t0,
            "trainable_params": sum(p.numel() for p in params)}


@torch.no_grad()
def mean_logprob(model, prompts: list[list[int]], conts: list[list[int]], batch: int
                 ) -> list[float]:
    """Mean per-token log-probability of each continuation after its prompt."""
    out = []
    for i in range(0, len(prompts), batch):
        rows = [p + c for p, c in zip(prompts[i:i + batch], conts[i:i + batch])]
        ids = torch.tensor(rows)  # every prompt and continuation has the same length
        logits, _ = model(ids[:, :-1])
        n = len(prompts[i])
        lp = torch.log_softmax(logits[:, n - 1:].float(), -1)
        out += lp.gather(-1, ids[:, n:, None])[..., 0].mean(1).tolist()
    return out


def measure(name: str, conts: list[list[int]], tok, train_grams: set, seconds: float) -> dict:
    texts = [tok.decode(c) for c in conts]
    mean = lambda xs: sum(xs) / len(xs)
    grams = [g for c in conts for g in ngrams(c, 8)]
    return {"condition": name,
            "rep-4": mean([repetition_rate(t) for t in texts]),
            "rep-4 (tok)": mean([repetition_rate(c) for c in conts]),
            "TTR": mean([type_token_ratio(t) for t in texts]),
            "distinct-2": distinct_n(texts, 2), "distinct-3": distinct_n(texts, 3),
            "self-BLEU": self_bleu(texts),
            "train 8-gram overlap": sum(g in train_grams for g in grams) / max(1, len(grams)),
            "seconds": seconds, "tokens/s": sum(map(len, conts)) / seconds,
            "texts": texts}


def plot(fit: dict, rows: list[dict], path: Path) -> None:
    """Training loss per step; repetition and diversity per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.plot(range(1, len(fit["step_losses"]) + 1), fit["step_losses"], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("hyperfitting SmolLM2-135M")
    ax = axes[1]
    keys = ("rep-4", "TTR", "distinct-2", "self-BLEU")
    width = 0.8 / len(rows)
    for j, r in enumerate(rows):
        vals = [r[k] / 100 if k == "self-BLEU" else r[k] for k in keys]
        ax.bar([i + j * width for i in range(len(keys))], vals, width, label=r["condition"])
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(keys))],
                  ["rep-4", "TTR", "distinct-2", "self-BLEU / 100"])
    ax.legend(fontsize=8)
    ax.set_title("continuations of held-out prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passages", type=int, default=16)
    p.add_argument("--passage-tokens", type=int, default=128)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=192)
    p.add_argument("--top-blocks", type=int, default=15, help="blocks tuned (-1: all weights)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--target-loss", type=float, default=0.05)
    p.add_argument("--train-minutes", type=float, default=15.0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/hyperfitting.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from seqlab.models.pretrained import load_pretrained

    t_all = time.perf_counter()
    model, tok = load_pretrained("smollm2")
    model.eval()
    train, prompts = split_passages(tok, args.passages, args.passage_tokens, args.prompts,
                                    args.prompt_tokens)
    train_grams = {g for t in train for g in ngrams(t, 8)}
    conts, rows = {}, []

    def run(name: str, strategy: str, **options) -> None:
        t0 = time.perf_counter()
        out = seqlab.decoding.generate(model, prompts, strategy, args.new_tokens, **options)
        secs = time.perf_counter() - t0
        conts[name] = [list(map(int, row)) for row in out.tokens]
        rows.append(measure(name, conts[name], tok, train_grams, secs))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "texts"}), flush=True)

    run("base greedy", "greedy")
    run(f"base top-p {args.top_p}", "sample", temperature=1.0, top_p=args.top_p, seed=args.seed)
    params = trainable(model, args.top_blocks)
    saved = [q.detach().clone() for q in params]
    fit = hyperfit(model, params, train, args)
    print(json.dumps({k: v for k, v in fit.items() if k != "step_losses"}), flush=True)
    run("hyperfitted greedy", "greedy")
    with torch.no_grad():  # back to the base weights to score every condition under them
        for q, s in zip(params, saved):
            q.copy_(s)
    t0 = time.perf_counter()
    for r in rows:
        lps = mean_logprob(model, prompts, conts[r["condition"]], batch=4)
        r["base log-prob"] = sum(lps) / len(lps)
    score_s = time.perf_counter() - t0
    total = time.perf_counter() - t_all

    print(f"\nSmolLM2-135M hyperfitted on {len(train)} passages of {args.passage_tokens} tokens "
          f"({fit['trainable_params'] / 1e6:.1f}M weights tuned: top {args.top_blocks} blocks + "
          f"norm; AdamW lr {args.lr}, batch {args.batch}): {fit['steps']} steps, {fit['epochs']} "
          f"epochs, {fit['train_seconds']:.0f} s, stopped on {fit['stopped']}; training loss "
          f"{fit['step_losses'][0]:.3f} (first step) -> {fit['final_train_loss']:.4f} (final, "
          f"eval mode). {len(prompts)} held-out prompts of {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens; {total:.0f} s in all at {args.threads} thread(s)\n")
    print("| condition | rep-4 | rep-4 (tok) | TTR | distinct-2 | distinct-3 | self-BLEU | "
          "base log-prob | train 8-gram overlap | s | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['condition']} | {r['rep-4']:.3f} | {r['rep-4 (tok)']:.3f} | {r['TTR']:.3f} | "
              f"{r['distinct-2']:.3f} | {r['distinct-3']:.3f} | {r['self-BLEU']:.2f} | "
              f"{r['base log-prob']:.2f} | {r['train 8-gram overlap']:.3f} | {r['seconds']:.0f} | "
              f"{r['tokens/s']:.1f} |")
    print("\nepoch mean losses: " + ", ".join(f"{x:.3f}" for x in fit["epoch_losses"]))
    for r in rows:
        print(f"\n[{r['condition']}] {tok.decode(prompts[0])!r} -> {r['texts'][0][:400]!r}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "seconds": total, "score_seconds": score_s,
                               "machine": platform.processor() or platform.machine(),
                               "prompts": [tok.decode(q) for q in prompts],
                               "fit": fit, "rows": rows}, indent=1))
    plot(fit, rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

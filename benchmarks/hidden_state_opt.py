"""Hidden-state optimisation for few-shot classification on SmolLM2-135M (issue 16 item 6;
Yoshida & Gimpel 2021, "Making the Most of your Model").

Task (real text): which standard-library package a function belongs to, from its docstring's
first line, among --labels packages. Each seed draws --shots demonstrations per package
(shuffled) and --queries balanced queries from other functions. A prompt line is
``Docstring: <first line>\\nPackage: <name>\\n\\n``; a query is scored by the log-probability
of each `` <name>\\n`` after ``Docstring: <line>\\nPackage:`` and predicted by the best.

Arms: the plain state of all demonstrations; and the state of the first demonstrations
optimised (``seqlab.decoding.hidden_state.optimize_state``: --steps Adam steps at each --lr)
to predict the last --recent demonstrations, which it then reads as usual. The demonstrations
are fixed per seed, so each arm builds one state and every query continues from it.

    python benchmarks/hidden_state_opt.py --threads 1 --out docs/results/hidden_state_opt.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from seqlab.decoding.hidden_state import optimize_state
from seqlab.tasks.stdlib_functions import load_functions


@torch.no_grad()
def predict(model, tok, state, query: str, labels: list[str]) -> int:
    """The label whose tokens are likeliest after the state and the query."""
    q = tok.encode(f"Docstring: {query}\nPackage:")
    logits, after = model(torch.tensor([q]), state)
    first = torch.log_softmax(logits[0, -1].float(), -1)
    ids = [tok.encode(f" {name}\n") for name in labels]
    scores = [first[i[0]].item() for i in ids]
    # Labels of one length continue `after` together, one batch row each.
    for n in sorted({len(i) for i in ids if len(i) > 1}):
        rows = [k for k, i in enumerate(ids) if len(i) == n]
        more, _ = model(torch.tensor([ids[k][:-1] for k in rows]), after.select([0] * len(rows)))
        lp = torch.log_softmax(more.float(), -1)
        for r, k in enumerate(rows):
            scores[k] += lp[r].gather(1, torch.tensor(ids[k][1:])[:, None]).sum().item()
    return max(range(len(labels)), key=scores.__getitem__)


def plot(rows: list[dict], chance: float, path: Path) -> None:
    """Accuracy per arm: the mean as a bar, each seed as a dot, chance as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, arm in enumerate(arms):
        accs = [r["accuracy"] for r in rows if r["arm"] == arm]
        ax.bar(i, sum(accs) / len(accs), color="tab:blue", alpha=0.6)
        ax.plot([i] * len(accs), accs, "ko", ms=4)
    ax.axhline(chance, color="gray", ls="--", label="chance")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("few-shot accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--labels", default="asyncio,email,tkinter,unittest,logging,multiprocessing")
    p.add_argument("--shots", type=int, default=2, help="demonstrations per package")
    p.add_argument("--recent", type=int, default=4, help="demonstrations the state is fitted to")
    p.add_argument("--queries", type=int, default=36)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", default="1e-3,1e-2")
    p.add_argument("--out", default="benchmarks/out/hidden_state_opt.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    labels = args.labels.split(",")
    by_label = {name: [f.summary for f in load_functions() if f.module.split(".")[0] == name]
                for name in labels}
    arms = [("plain", None)] + [(f"HSO lr {lr}", float(lr)) for lr in args.lr.split(",")]
    rows, t_all = [], time.perf_counter()
    for seed in map(int, args.seeds.split(",")):
        rng = random.Random(seed)
        pools = {n: rng.sample(v, len(v)) for n, v in by_label.items()}
        demos = [(line, n) for n in labels for line in pools[n][:args.shots]]
        rng.shuffle(demos)
        per = args.queries // len(labels)
        queries = [(line, i) for i, n in enumerate(labels) for line in pools[n][args.shots:args.shots + per]]
        text = [f"Docstring: {line}\nPackage: {n}\n\n" for line, n in demos]
        past = tok.encode("".join(text[:-args.recent]))
        recent = tok.encode("".join(text[-args.recent:]))
        for name, lr in arms:
            t0 = time.perf_counter()
            state, losses = optimize_state(model, past, recent, steps=0 if lr is None else args.steps,
                                           lr=lr or 0.0)
            with torch.no_grad():
                _, state = model(torch.tensor([recent]), state)
            correct = sum(predict(model, tok, state, q, labels) == y for q, y in queries)
            rows.append({"seed": seed, "arm": name, "accuracy": correct / len(queries),
                         "recent_loss": [losses[0], losses[-1]], "seconds": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t_all
    print(f"\nSmolLM2-135M, {len(labels)} packages, {args.shots} shots each, {args.queries} queries "
          f"per seed, seeds {args.seeds}; {total:.0f} s at {args.threads} thread(s)\n")
    print("| arm | accuracy (mean over seeds) | per seed | recent-demo loss before -> after |")
    print("|---|---:|---|---|")
    for name, _ in arms:
        rs = [r for r in rows if r["arm"] == name]
        acc = sum(r["accuracy"] for r in rs) / len(rs)
        per_seed = ", ".join(f"{r['accuracy']:.3f}" for r in rs)
        fit = ", ".join(f"{r['recent_loss'][0]:.3f} -> {r['recent_loss'][1]:.3f}" for r in rs)
        print(f"| {name} | {acc:.3f} | {per_seed} | {fit} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "chance": 1 / len(labels), "seconds": total,
                               "rows": rows}, indent=1))
    plot(rows, 1 / len(labels), out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""CoLa ("Skip a Layer or Loop it?") on SmolLM2-135M: chains of the model's own layers,
searched by MCTS, as a model of their own on a multiple-choice task and as self-speculation
drafts (issue 16, item 2).

Multiple choice (``seqlab.tasks.line_choice``): a held-out line of standard-library code
after its --context-lines preceding lines (the last --context-tokens tokens), among 3
distractor lines of the same file given the answer's indentation; each candidate is scored
by its mean token log-probability, the highest wins. Validation and test questions come
from disjoint modules (fixed crc32 split). Arms:

- the full model (chain 0..29);
- the best chain for the validation split (MCTS, --split-rollouts chains scored, reward the
  mean over validation questions), then applied unchanged to the test questions;
- the oracle: an MCTS per test question (--rollouts chains each, the paper's protocol),
  reward from that question's answer, so it is an upper bound, not a model; run on the
  first --oracle test questions.

Reward of a chain on a question: 1 if the answer ranks first, plus 0.25 * tanh(margin), the
margin being the answer's mean log-probability minus the best distractor's; a split's reward
is the mean (so accuracy plus a tie-break). Moves: next layer, skip one, skip two, repeat
(at most once in a row); chains start at layer 0 and end at layer 29; the model's own chain
is the first one scored in every search (a seed), so a search never does worse than it.

Self-speculation: chains scored on greedy agreement with the full model on validation
prompts (code windows of validation modules, teacher-forced on the full model's greedy
continuation), reward the speedup this predicts for a chain draft with gamma = --gamma,
(1 - a^(g+1)) / (1 - a) / (g c + 1), a the agreement, c the chain's cost per token relative
to the full model from parameter counts (a block: 3.5M, the head: 28.3M). The best chain
drafts for ``speculative`` on test prompts (held-out modules) at batch 1, against greedy and
the hand-picked every-second-layer draft; every output must equal greedy. The draft search
has no seed, moves next layer and skip one only, and a limit of 29 layers (a draft must be
shorter than the model).

    python benchmarks/cola.py --threads 1 --out docs/results/cola
    python benchmarks/cola.py --threads 1 --control --skip mc spec --out docs/results/cola_control

The control runs the oracle's search on the same questions rewarded by a distractor.
Writes docs/results/cola.json and docs/results/cola.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def embed(model, ids):
    """The LM's input embedding (``LM._embed``: scaled for Gemma, 1.0 for SmolLM2)."""
    x = model.embed(ids)
    return x if model.cfg.embed_scale == 1.0 else x * model.cfg.embed_scale


class Question:
    """One multiple-choice question, tokenized, with a prefix cache of its hidden states."""

    def __init__(self, model, tok, q, context_tokens: int, cache_entries: int):
        self.q, self.model = q, model
        self.target = q.answer   # what the reward favours: the answer, or a distractor (control)
        self.ctx = torch.tensor([tok.encode(q.context)[-context_tokens:]])
        cands = [tok.encode(c) for c in q.choices]
        self.lengths = torch.tensor([len(c) for c in cands])
        width = int(self.lengths.max())
        self.cand = torch.tensor([c + [0] * (width - len(c)) for c in cands])   # (C, L)
        self.scores: dict[tuple[int, ...], torch.Tensor] = {}
        self.cache_entries = cache_entries
        self.forget()

    def forget(self) -> None:
        """Drop the cached hidden states (the scores stay): each prefix holds ~0.4 MB."""
        from seqlab.models.layer_chain import PrefixCache

        self.cache = PrefixCache((embed(self.model, self.ctx), embed(self.model, self.cand)),
                                 self.apply, self.cache_entries)

    def apply(self, i: int, value):
        """Layer ``i`` on the context, then on the candidates continuing its state."""
        ctx, cand = value
        block = self.model.blocks[i]
        ctx, state = block(ctx, None, self.ctx)
        cand, _ = block(cand, state.select(torch.zeros(len(self.cand), dtype=torch.long)),
                        self.cand)
        return ctx, cand

    def score(self, chain) -> torch.Tensor:
        """Mean log-probability of each candidate's tokens under ``chain``: (C,)."""
        chain = tuple(chain)
        if chain not in self.scores:
            ctx, cand = self.cache.run(chain)
            m = self.model
            C, L = self.cand.shape
            # the context's last position predicts each candidate's first token
            h = torch.cat([ctx[:, -1:].expand(C, 1, -1), cand[:, :-1]], 1)     # (C, L, D)
            logp = torch.log_softmax(m.head(m.norm(h)).float(), -1)
            tok = logp.gather(-1, self.cand[..., None])[..., 0]                 # (C, L)
            mask = torch.arange(L)[None] < self.lengths[:, None]
            self.scores[chain] = (tok * mask).sum(1) / self.lengths
        return self.scores[chain]

    def correct(self, chain) -> bool:
        return int(self.score(chain).argmax()) == self.q.answer

    def reward(self, chain) -> float:
        s = self.score(chain)
        a = self.target
        margin = float(s[a] - torch.cat([s[:a], s[a + 1:]]).max())
        return float(margin > 0) + 0.25 * math.tanh(margin)

    def reached(self) -> int:
        """How many candidates some scored chain ranked first (how far chains move answers)."""
        return len({int(s.argmax()) for s in self.scores.values()})


def multiple_choice(model, tok, args, search_cfg) -> dict:
    from seqlab.models.cola_search import ColaSearchConfig, search, search_split
    from seqlab.models.layer_chain import chain_stats
    from seqlab.tasks.line_choice import LineChoiceConfig, line_questions

    n = len(model.blocks)
    identity = tuple(range(n))
    cfg = LineChoiceConfig(context_lines=args.context_lines)
    val = [Question(model, tok, q, args.context_tokens, args.split_cache)
           for q in line_questions("validation", args.val, cfg)]
    test = [Question(model, tok, q, args.context_tokens, args.oracle_cache)
            for q in line_questions("test", args.test, cfg)]
    print(f"{len(val)} validation and {len(test)} test questions; context "
          f"{sum(q.ctx.shape[1] for q in test) / len(test):.0f} tokens, candidates "
          f"{sum(float(q.lengths.float().mean()) for q in test) / len(test):.1f} tokens on average",
          flush=True)
    timings = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        print(f"  {name}: {timings[name]:.0f} s", flush=True)
        return out

    def accuracy(qs, chain_of):
        return sum(q.correct(chain_of(q)) for q in qs) / len(qs)

    split_cfg = ColaSearchConfig.from_dict({**search_cfg, "budget": args.split_rollouts})
    found = timed("search on the validation split (the model's chain first)", lambda: search_split(
        lambda q, c: q.reward(c), val, n, split_cfg, seeds=[identity]))
    split_chain = found.chain
    full_val, split_val = accuracy(val, lambda q: identity), accuracy(val, lambda q: split_chain)
    for q in val:
        q.forget()

    def both(q):
        q.correct(identity), q.correct(split_chain)
        q.forget()

    timed("full model and validation chain on test", lambda: [both(q) for q in test])
    full_test = accuracy(test, lambda q: identity)
    split_test = accuracy(test, lambda q: split_chain)
    print(f"validation chain {list(split_chain)} ({chain_stats(split_chain, n)}): "
          f"validation {split_val:.3f} (full {full_val:.3f}), test {split_test:.3f} "
          f"(full {full_test:.3f})", flush=True)

    oracle_cfg = ColaSearchConfig.from_dict({**search_cfg, "budget": args.rollouts})
    rows = []
    t = time.perf_counter()
    for k, q in enumerate(test[:args.oracle]):
        res = search(q.reward, n, oracle_cfg, seeds=[identity])
        correct = [c for c in res.scores if q.correct(c)]
        rows.append({"module": q.q.module, "lineno": q.q.lineno, "full": q.correct(identity),
                     "split_chain": q.correct(split_chain), "oracle": q.correct(res.chain),
                     "chain": list(res.chain), **chain_stats(res.chain, n),
                     "chains_scored": len(res.scores), "correct_chains": len(correct),
                     "shorter_correct": any(len(c) < n for c in correct),
                     "candidates_reached": q.reached(), "layers_run": q.cache.layers_run})
        q.forget()
        r = rows[-1]
        print(f"  oracle {k + 1}/{args.oracle}: full {int(r['full'])} oracle {int(r['oracle'])} "
              f"length {r['length']} skipped {r['skipped']} repeated {r['repeated']} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    timings["oracle searches"] = time.perf_counter() - t
    sub = test[:len(rows)]
    mean = lambda key: sum(r[key] for r in rows) / max(len(rows), 1)   # noqa: E731
    full_ok = [r for r in rows if r["full"]]
    full_bad = [r for r in rows if not r["full"]]
    return {
        "questions": {"validation": len(val), "test": len(test), "oracle": len(rows)},
        "context_tokens_mean": sum(q.ctx.shape[1] for q in test) / len(test),
        "full": {"validation": full_val, "test": full_test,
                 "oracle_subset": accuracy(sub, lambda q: identity)},
        "split_chain": {"chain": list(split_chain), **chain_stats(split_chain, n),
                        "validation": split_val, "test": split_test,
                        "oracle_subset": accuracy(sub, lambda q: split_chain),
                        "reward": found.reward, "chains_scored": len(found.scores)},
        "oracle": {"accuracy": mean("oracle"), "length": mean("length"),
                   "skipped": mean("skipped"), "repeated": mean("repeated"),
                   "shorter_correct_when_full_right": (sum(r["shorter_correct"] for r in full_ok)
                                                       / max(len(full_ok), 1)),
                   "fixed_when_full_wrong": (sum(r["oracle"] for r in full_bad)
                                             / max(len(full_bad), 1)),
                   "full_right": len(full_ok), "full_wrong": len(full_bad),
                   "candidates_reached": mean("candidates_reached")},
        "oracle_rows": rows, "seconds": timings,
        "split_scores": [[list(c), r] for c, r in found.scores.items()],
    }


def control(model, tok, args, search_cfg) -> dict:
    """The oracle's search rewarded by a distractor (the one after the answer) instead of the
    answer: how often some chain makes a wrong line win, i.e. how much of the oracle's
    accuracy is the search choosing among the answers chains scatter."""
    from seqlab.models.cola_search import ColaSearchConfig, search
    from seqlab.tasks.line_choice import LineChoiceConfig, line_questions

    n = len(model.blocks)
    cfg = ColaSearchConfig.from_dict({**search_cfg, "budget": args.rollouts})
    qs = line_questions("test", args.oracle, LineChoiceConfig(context_lines=args.context_lines))
    rows, t = [], time.perf_counter()
    for k, lq in enumerate(qs):
        q = Question(model, tok, lq, args.context_tokens, args.oracle_cache)
        q.target = (lq.answer + 1) % len(lq.choices)
        res = search(q.reward, n, cfg, seeds=[tuple(range(n))])
        won = int(q.score(res.chain).argmax()) == q.target
        rows.append({"module": lq.module, "lineno": lq.lineno, "distractor_wins": won,
                     "full_picks_it": int(q.score(tuple(range(n))).argmax()) == q.target,
                     "length": len(res.chain)})
        print(f"  control {k + 1}/{len(qs)}: distractor wins {int(won)} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
        q.forget()
    return {"rows": rows, "distractor_wins": sum(r["distractor_wins"] for r in rows) / len(rows),
            "full_picks_it": sum(r["full_picks_it"] for r in rows) / len(rows),
            "seconds": time.perf_counter() - t}


def code_prompts(tok, split: str, n: int, length: int) -> list[list[int]]:
    """``n`` windows of ``length`` tokens from a third of the way into the split's longer
    modules (past their headers), from a line start."""
    from seqlab.tasks.stdlib_functions import split_files

    out = []
    for p in split_files(split):
        text = p.read_text(encoding="utf-8", errors="replace")
        if len(text) < 8000:
            continue
        start = text.index("\n", len(text) // 3) + 1
        ids = tok.encode(text[start:start + 8 * length])[:length]
        if len(ids) == length:
            out.append(ids)
        if len(out) == n:
            break
    return out


def self_speculation(model, tok, args, search_cfg) -> dict:
    from seqlab.decoding import generate
    from seqlab.models.cola_search import ColaSearchConfig, search
    from seqlab.models.layer_chain import PrefixCache, chain_stats, layer_chain

    n = len(model.blocks)
    identity = tuple(range(n))
    block = sum(p.numel() for p in model.blocks[0].parameters())
    head = model.head.weight.numel()
    cost = lambda c: (len(c) * block + head) / (n * block + head)   # noqa: E731
    g = args.gamma

    def predicted(a: float, c: float) -> float:
        per_call = g + 1 if a >= 1 else (1 - a ** (g + 1)) / (1 - a)
        return per_call / (g * c + 1)

    t0 = time.perf_counter()
    val = torch.tensor(code_prompts(tok, "validation", args.spec_val, args.spec_prompt))
    cont = torch.tensor(generate(model, val.tolist(), "greedy", args.spec_new).tokens)
    seq = torch.cat([val, cont], 1)[:, :-1]           # teacher forcing on the full model's text
    P = val.shape[1]
    cache = PrefixCache(embed(model, seq), lambda i, h: model.blocks[i](h, None, seq)[0],
                        args.split_cache)
    agreement = {}

    def reward(chain):
        h = cache.run(chain)[:, P - 1:]
        a = float((model.head(model.norm(h)).argmax(-1) == cont).float().mean())
        agreement[tuple(chain)] = a
        return predicted(a, cost(chain))

    # A draft must be shorter than the model: chains end at the last layer or at n - 1 layers.
    # Moves: next layer or skip one; a repeat costs a layer and a skip of two lost agreement
    # (the every-second-layer draft agrees on 0 of 16 tokens in a smoke run).
    cfg = ColaSearchConfig.from_dict({**search_cfg, "budget": args.draft_rollouts,
                                      "max_length": n - 1, "moves": (1, 2)})
    found = search(reward, n, cfg)
    search_s = time.perf_counter() - t0
    every2 = tuple(range(0, n, 2))
    reward(every2)   # scored for the table only, not part of the search
    drafts = {"MCTS chain": found.chain, "every 2nd layer": every2}
    print(f"draft search ({search_s:.0f} s): {list(found.chain)} {chain_stats(found.chain, n)} "
          f"agreement {agreement[found.chain]:.3f}, predicted {found.reward:.2f}x; every 2nd "
          f"layer: agreement {agreement[every2]:.3f}, predicted "
          f"{predicted(agreement[every2], cost(every2)):.2f}x", flush=True)

    prompts = code_prompts(tok, "test", args.spec_test, args.spec_prompt)
    meths = [("greedy", "greedy", {})] + [
        (name, "speculative", {"draft": layer_chain(model, c), "gamma": g, "temperature": 0})
        for name, c in drafts.items()]
    totals = {name: {"tokens": 0, "seconds": 0.0, "accepted": 0, "rounds": 0, "same": True}
              for name, _, _ in meths}
    for p in prompts:   # interleaved per prompt, so a slower moment hits every method alike
        plain = None
        for name, strategy, opts in meths:
            t = time.perf_counter()
            out = generate(model, [p], strategy, args.spec_new_test, **opts)
            dt, s, tot = time.perf_counter() - t, out.stats, totals[name]
            plain = out.tokens if plain is None else plain
            tot["same"] &= out.tokens == plain
            tot["tokens"] += s.new_tokens
            tot["seconds"] += dt
            tot["accepted"] += s.accepted_tokens
            tot["rounds"] += sum(len(r) for r in s.accepted)
            print(f"  {name:16s} {s.new_tokens / dt:5.2f} tok/s, accepted/call "
                  f"{s.mean_accepted:.2f}", flush=True)
    base = totals["greedy"]["tokens"] / totals["greedy"]["seconds"]
    rows = []
    for name, tot in totals.items():
        chain = drafts.get(name, identity)
        tps = tot["tokens"] / tot["seconds"]
        rows.append({"method": name, "chain": list(chain), **chain_stats(chain, n),
                     "cost": cost(chain), "agreement": agreement.get(chain),
                     "predicted": (predicted(agreement[chain], cost(chain))
                                   if name != "greedy" else 1.0),
                     "tokens_per_s": tps, "vs_greedy": tps / base,
                     "accepted_per_call": (tot["accepted"] / tot["rounds"]
                                           if name != "greedy" else None),
                     "same_as_greedy": tot["same"], "seconds": tot["seconds"]})
    return {"rows": rows, "search_seconds": search_s, "chains_scored": len(found.scores),
            "draft_scores": [[list(c), r, agreement[c]] for c, r in found.scores.items()],
            "prompts": {"validation": len(val), "test": len(prompts)}}


def plot(mc: dict, spec: dict, layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    k = mc["questions"]["oracle"]
    names = ["full model", "validation chain", "oracle chain"]
    test = [mc["full"]["test"], mc["split_chain"]["test"], None]
    sub = [mc["full"]["oracle_subset"], mc["split_chain"]["oracle_subset"],
           mc["oracle"]["accuracy"]]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [v or 0 for v in test], 0.4,
           label=f"test ({mc['questions']['test']} questions)")
    ax.bar([i + 0.2 for i in x], sub, 0.4, label=f"first {k} test questions")
    ax.axhline(0.25, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("accuracy (next line of code, 4 choices)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax = axes[1]
    rows = spec["rows"]
    ax.bar([r["method"] for r in rows], [r["vs_greedy"] for r in rows], label="measured")
    ax.plot([r["method"] for r in rows], [r["predicted"] for r in rows], "o", color="C3",
            label="predicted by the search")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("tokens/s / greedy tokens/s")
    ax.set_title("self-speculation, batch 1", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[2]
    chains = [("full", list(range(layers))), ("validation chain", mc["split_chain"]["chain"])]
    chains += [(r["method"], r["chain"]) for r in rows if r["method"] != "greedy"]
    for i, (name, chain) in enumerate(chains):
        ax.plot(range(len(chain)), chain, ".-", label=f"{name} ({len(chain)})", color=f"C{i}")
    ax.set_xlabel("position in the chain")
    ax.set_ylabel("layer of SmolLM2")
    ax.legend(fontsize=8)
    fig.suptitle("CoLa chains of SmolLM2-135M's layers (1 CPU thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val", type=int, default=24, help="validation questions")
    ap.add_argument("--test", type=int, default=80, help="test questions")
    ap.add_argument("--oracle", type=int, default=16, help="test questions searched one by one")
    ap.add_argument("--context-lines", type=int, default=8)
    ap.add_argument("--context-tokens", type=int, default=96)
    ap.add_argument("--rollouts", type=int, default=32, help="chains scored per oracle question")
    ap.add_argument("--split-rollouts", type=int, default=14,
                    help="chains scored on the whole validation split")
    ap.add_argument("--draft-rollouts", type=int, default=48, help="draft chains scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--spec-val", type=int, default=6, help="validation prompts (draft search)")
    ap.add_argument("--spec-test", type=int, default=4, help="test prompts (timing)")
    ap.add_argument("--spec-prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--spec-new", type=int, default=32, help="new tokens, draft search")
    ap.add_argument("--spec-new-test", type=int, default=48, help="new tokens, timing")
    ap.add_argument("--split-cache", type=int, default=24, help="prefixes kept per question")
    ap.add_argument("--oracle-cache", type=int, default=96, help="prefixes kept per question")
    ap.add_argument("--skip", nargs="*", default=[], choices=["mc", "spec"])
    ap.add_argument("--control", action="store_true",
                    help="also run the oracle's search rewarded by a distractor")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "cola"),
                    help="path of the results without extension (.json and .png are written)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    t0, c0 = time.perf_counter(), time.process_time()
    model, tok = load_pretrained("smollm2")
    model.eval()
    search_cfg = {"seed": args.seed, "moves": (1, 2, 3, 0), "max_repeats": 1}
    mc = spec = ctrl = None
    with torch.inference_mode():
        if args.control:
            ctrl = control(model, tok, args, search_cfg)
        if "mc" not in args.skip:
            mc = multiple_choice(model, tok, args, search_cfg)
        if "spec" not in args.skip:
            spec = self_speculation(model, tok, args, search_cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if mc:
        o, f, s = mc["oracle"], mc["full"], mc["split_chain"]
        k = mc["questions"]["oracle"]
        print(f"\n{'arm':18s} {'test acc':>8s} {'first ' + str(k):>9s} {'length':>6s} "
              f"{'skipped':>7s} {'repeated':>8s}")
        print(f"{'full model':18s} {f['test']:8.3f} {f['oracle_subset']:9.3f} "
              f"{len(model.blocks):6d} {0:7d} {0:8d}")
        print(f"{'validation chain':18s} {s['test']:8.3f} {s['oracle_subset']:9.3f} "
              f"{s['length']:6d} {s['skipped']:7d} {s['repeated']:8d}")
        print(f"{'oracle (per input)':18s} {'-':>8s} {o['accuracy']:9.3f} {o['length']:6.1f} "
              f"{o['skipped']:7.1f} {o['repeated']:8.1f}")
        print(f"full right: {o['full_right']}, a shorter correct chain found for "
              f"{o['shorter_correct_when_full_right']:.2f}; full wrong: {o['full_wrong']}, "
              f"fixed for {o['fixed_when_full_wrong']:.2f}; candidates some chain ranks first: "
              f"{o['candidates_reached']:.2f} of 4")
    if ctrl:
        print(f"\ncontrol: a distractor wins under the chain searched for it on "
              f"{ctrl['distractor_wins']:.3f} of {len(ctrl['rows'])} questions (the full model "
              f"picks it on {ctrl['full_picks_it']:.3f})")
    if spec:
        print(f"\n{'method':16s} {'length':>6s} {'cost':>5s} {'agree':>6s} {'pred':>5s} "
              f"{'tok/s':>6s} {'x greedy':>8s} {'acc/call':>8s} {'= greedy':>8s}")
        for r in spec["rows"]:
            print(f"{r['method']:16s} {r['length']:6d} {r['cost']:5.2f} "
                  f"{r['agreement'] if r['agreement'] is not None else float('nan'):6.3f} "
                  f"{r['predicted']:5.2f} {r['tokens_per_s']:6.2f} {r['vs_greedy']:8.2f} "
                  f"{r['accepted_per_call'] if r['accepted_per_call'] is not None else 0:8.2f} "
                  f"{str(r['same_as_greedy']):>8s}")
    print(f"\n{wall:.0f} s wall, {cpu:.0f} s CPU at {args.threads} thread(s)")
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/cola.py " + " ".join(sys.argv[1:]),
              "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
              "lscpu_flags": next((l.split(":", 1)[1].strip() for l in flags.splitlines()
                                   if l.startswith("Flags")), ""),
              "wall_seconds": wall, "cpu_seconds": cpu, "multiple_choice": mc, "control": ctrl,
              "self_speculation": spec, "args": vars(args)}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if mc and spec:
        plot(mc, spec, len(model.blocks), out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}" + (f" and {out.with_suffix('.png')}"
                                                   if mc and spec else ""))


if __name__ == "__main__":
    main()

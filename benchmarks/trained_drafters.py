"""Drafters trained on SmolLM2's own hidden states against plain greedy and prompt lookup.

Trains (once, cached under benchmarks/out/drafters/) the three kinds of
``seqlab.decoding.drafters`` -- Medusa-like heads, Chimera, Hidden Transfer -- on
SmolLM2-135M's hidden states over the training part of the Python documentation and
standard-library code, each in a bounded CPU time, then decodes held-out prompts of
English documentation and of code greedily at batch 1 and batch 8. Every method runs
side by side on the same prompts in one process; reported per method: tokens/s, its
ratio to plain greedy, accepted draft tokens per target call, and whether the output
equals plain greedy (it must: decoding is lossless).

    python benchmarks/trained_drafters.py                      # ~30 minutes at 1 thread
    python benchmarks/trained_drafters.py --train-seconds 60 --new-tokens 32   # quicker

Writes docs/results/trained_drafters.json and docs/results/trained_drafters.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"
DRAFTERS = ROOT / "benchmarks" / "out" / "drafters"


def doc_prompts(tok, n: int, length: int) -> list[list[int]]:
    """``n`` held-out documentation topics (``pydoc_data``), their first ``length`` tokens."""
    from pydoc_data.topics import topics

    from seqlab.decoding.drafters.train import held_out

    texts = [t for name, t in sorted(topics.items()) if held_out(name) and len(t) > 2000]
    return [tok.encode(texts[i % len(texts)])[:length] for i in range(n)]


def code_prompts(tok, n: int, length: int) -> list[list[int]]:
    """``n`` windows of held-out standard-library modules, each from a line start past the
    module's header."""
    from seqlab.decoding.drafters.train import held_out
    from seqlab.tasks.corpus import stdlib_dir

    root = stdlib_dir()
    files = [p for p in sorted(root.glob("*.py")) if held_out(str(p.relative_to(root)))]
    out = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        if len(text) < 8000:
            continue
        start = text.index("\n", len(text) // 3) + 1
        out.append(tok.encode(text[start:start + 4 * length])[:length])
        if len(out) == n:
            break
    return out


def train_all(model, tok, kinds, seconds: float, cache_tokens: int, where: Path = DRAFTERS):
    """Each kind's drafter, trained once and kept in ``where`` (benchmarks/out/drafters)."""
    from seqlab.decoding.drafters import load
    from seqlab.decoding.drafters.train import (DraftTrainConfig, cache_features, default_texts,
                                                train_drafter)

    drafters, reports = {}, {}
    cache = None
    for kind in kinds:
        folder = where / f"smollm2-{kind}"
        if (folder / "drafter.json").is_file():
            drafters[kind] = load(folder)
            reports[kind] = json.loads((folder / "training.json").read_text())
            continue
        cfg = DraftTrainConfig(kind=kind, time_limit=seconds, cache_tokens=cache_tokens)
        if cache is None:
            t0 = time.process_time()
            cache = cache_features(model, tok, default_texts("train"), cfg, "smollm2")
            print(f"features cached in {time.process_time() - t0:.0f} s CPU: {cache}")
        t0 = time.process_time()
        drafter, report = train_drafter(cache, cfg)
        report["cpu_seconds"] = time.process_time() - t0
        drafter.save(folder)
        (folder / "training.json").write_text(json.dumps(report, indent=2) + "\n")
        drafters[kind], reports[kind] = drafter.eval(), report
    return drafters, reports


def methods(drafters) -> list[tuple[str, str, dict]]:
    out = [("greedy", "greedy", {}),
           ("prompt lookup (4)", "prompt-lookup", {"num_draft": 4, "temperature": 0})]
    for kind in ("heads", "chimera", "transfer"):
        if kind in drafters:
            out.append((f"{kind} (chain 4)", "speculative",
                        {"draft": drafters[kind], "gamma": 4, "temperature": 0}))
    if "transfer" in drafters:
        out.append(("transfer (tree 2,1,1,1)", "tree",
                    {"draft": drafters["transfer"], "branching": (2, 1, 1, 1), "temperature": 0}))
    return out


def measure(model, prompts, batch: int, new_tokens: int, meths) -> list[dict]:
    """All methods on the same prompts, ``batch`` rows per call; one pass each, interleaved
    per batch of prompts so a slower moment of the machine hits every method alike."""
    from seqlab.decoding import generate

    totals = {name: {"tokens": 0, "seconds": 0.0, "accepted": 0, "rounds": 0, "calls": 0,
                     "same": True} for name, _, _ in meths}
    for i in range(0, len(prompts), batch):
        rows = prompts[i:i + batch]
        plain = None
        for name, strategy, options in meths:
            t0 = time.perf_counter()
            out = generate(model, rows, strategy, new_tokens, **options)
            dt = time.perf_counter() - t0
            s, tot = out.stats, totals[name]
            if plain is None:
                plain = out.tokens
            tot["same"] &= out.tokens == plain
            tot["tokens"] += s.new_tokens
            tot["seconds"] += dt
            tot["accepted"] += s.accepted_tokens
            tot["rounds"] += sum(len(r) for r in s.accepted)
            tot["calls"] += s.target_calls
            print(f"  {name:26s} batch {batch}: {s.new_tokens / dt:6.1f} tok/s "
                  f"accepted/call {s.mean_accepted:.2f}", flush=True)
    base = totals["greedy"]["tokens"] / totals["greedy"]["seconds"]
    rows = []
    for name, tot in totals.items():
        tps = tot["tokens"] / tot["seconds"]
        rows.append({"method": name, "batch": batch, "tokens_per_s": tps, "vs_greedy": tps / base,
                     "accepted_per_call": tot["accepted"] / max(tot["rounds"], 1),
                     "target_calls_per_token": tot["calls"] / tot["tokens"],
                     "same_as_greedy": tot["same"], "new_tokens": tot["tokens"],
                     "seconds": tot["seconds"]})
    return rows


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["domain"], r["batch"]) for r in rows})
    names = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    w = 0.8 / len(settings)
    for k, (dom, b) in enumerate(settings):
        vals = [next((r["vs_greedy"] for r in rows if r["method"] == n and r["domain"] == dom
                      and r["batch"] == b), 0) for n in names]
        ax.bar([i + k * w for i in range(len(names))], vals, w, label=f"{dom}, batch {b}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(names))], names, rotation=20, ha="right",
                  fontsize=8)
    ax.set_ylabel("tokens/s / greedy tokens/s")
    ax.set_title("SmolLM2-135M, greedy, 1 CPU thread: trained drafters vs prompt lookup")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", nargs="+", default=["heads", "chimera", "transfer"])
    ap.add_argument("--train-seconds", type=float, default=180.0, help="training time per kind")
    ap.add_argument("--cache-tokens", type=int, default=16_384)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch1-prompts", type=int, default=2, help="prompts per domain at batch 1")
    ap.add_argument("--batch8-new-tokens", type=int, default=48)
    ap.add_argument("--drafters", default=str(DRAFTERS), help="where trained drafters are kept")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8], choices=[1, 8])
    ap.add_argument("--out", default=str(OUT / "trained_drafters"),
                    help="path of the results without extension (.json and .png are written)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from seqlab.models.pretrained import load_pretrained

    model, tok = load_pretrained("smollm2")
    model.eval()
    t0 = time.process_time()
    drafters, reports = train_all(model, tok, args.kinds, args.train_seconds, args.cache_tokens,
                                 Path(args.drafters))
    train_cpu = time.process_time() - t0
    meths = methods(drafters)
    rows = []
    for domain, make in (("docs", doc_prompts), ("code", code_prompts)):
        prompts = make(tok, 8, args.prompt_tokens)
        for batch, new, ps in ((1, args.new_tokens, prompts[:args.batch1_prompts]),
                               (8, args.batch8_new_tokens, prompts)):
            if batch not in args.batches:
                continue
            print(f"{domain}, batch {batch}:", flush=True)
            for r in measure(model, ps, batch, new, meths):
                rows.append({"domain": domain, **r})
    print(f"\n{'domain':6s} {'batch':>5s} {'method':26s} {'tok/s':>7s} {'x greedy':>8s} "
          f"{'acc/call':>8s} {'lossless':>8s}")
    for r in rows:
        print(f"{r['domain']:6s} {r['batch']:5d} {r['method']:26s} {r['tokens_per_s']:7.2f} "
              f"{r['vs_greedy']:8.2f} {r['accepted_per_call']:8.2f} {str(r['same_as_greedy']):>8s}")
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/trained_drafters.py " + " ".join(sys.argv[1:]),
              "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
              "lscpu_flags": next((l.split(":", 1)[1].strip() for l in flags.splitlines()
                                   if l.startswith("Flags")), ""),
              "train_cpu_seconds": train_cpu, "training": reports, "rows": rows,
              "args": vars(args)}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Decoding strategies side by side, and against Hugging Face ``generate`` on the same weights.

Two settings, each measured at batch 1 and batch 8 in one process:

* ``pair``: a trained byte-level target (6 attention layers, width 384) and draft
  (2 layers, width 128, then distilled from the target) from
  ``benchmarks/decoding_models.py`` (trained once, cached), continuing code from the
  held-out part of the standard-library corpus.
  transformers runs the same weights after ``export_hf``.
* ``smollm2``: SmolLM2-135M as target with a small draft trained on its tokenizer
  (``decoding_models.smollm2_draft``, cached) and the drafters that need no second
  model: prompt lookup, the adaptive n-gram drafter, and self-speculation by skipping
  layers; prompts are English (the Python documentation in ``pydoc_data``, held out
  of the draft's training) and code. transformers runs the same GGUF weights, with
  the same draft for its assisted generation.

Each strategy runs at a fixed draft depth (4) and at a fixed target budget (8 tokens
scored per sequence per target call, the fairness point of the Recursive Speculative
Decoding paper). Reported per strategy: tokens/s, target calls per generated token,
mean accepted draft tokens per call, speedup over greedy at the same batch, and
whether greedy-mode output is identical to plain greedy (seqlab) and to transformers'
greedy. transformers' assisted generation and prompt lookup run at batch 1 only
(transformers refuses them at larger batches).

    python benchmarks/decoding.py                      # both settings (~15 minutes)
    python benchmarks/decoding.py --settings pair --batches 1 --new-tokens 64   # quicker
Writes JSON lines to benchmarks/out/decoding.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

CHAIN_DEPTH = 4   # fixed draft length
BUDGET = 8        # fixed target tokens per sequence per call


def code_prompts(n: int, length: int) -> list[bytes]:
    """``n`` byte windows of held-out standard-library code, each starting at a line start."""
    from seqlab.tasks.corpus import DataConfig, load_corpus

    val = load_corpus(DataConfig(), progress=False).split("val")
    out, stride = [], len(val) // (n + 1)
    for i in range(n):
        start = i * stride + 4096
        while val[start - 1] != ord("\n"):
            start += 1
        out.append(bytes(val[start:start + length]))
    return out


def text_prompts(n: int) -> list[str]:
    """English paragraphs of the Python documentation (shipped in the stdlib's pydoc_data)."""
    from pydoc_data.topics import topics

    texts = [t for _, t in sorted(topics.items()) if len(t) > 1500]
    return [texts[i * len(texts) // n][:1200] for i in range(n)]


def timed(fn, reps: int = 2):
    best, result = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# -- seqlab ---------------------------------------------------------------------------------
def seqlab_configs(draft, self_draft: bool):
    """(table, name, strategy, options, sampled): the runs of one setting."""
    tag = "self-draft" if self_draft else "draft"
    runs = [("depth 4", "greedy", "greedy", {}, False)]
    if draft is not None:
        runs += [
            ("depth 4", f"speculative chain ({tag}), gamma 4", "speculative",
             {"draft": draft, "gamma": CHAIN_DEPTH}, False),
            ("depth 4", f"tree ({tag}), branching 2,2,1,1", "tree",
             {"draft": draft, "branching": (2, 2, 1, 1)}, False),
            ("depth 4", f"tree ({tag}), beam 3 x 4", "tree",
             {"draft": draft, "beam_width": 3, "depth": CHAIN_DEPTH}, False),
        ]
    runs += [
        ("depth 4", "beam, 4 beams", "beam", {"num_beams": 4}, False),
        ("depth 4", "diverse beam, 4 beams in 2 groups", "diverse-beam",
         {"num_beams": 4, "num_groups": 2}, False),
        ("depth 4", "prompt-lookup, 4 tokens", "prompt-lookup", {"num_draft": CHAIN_DEPTH}, False),
        ("depth 4", "ngram (adaptive), 4 tokens", "ngram", {"num_draft": CHAIN_DEPTH}, False),
    ]
    if draft is not None:
        runs += [
            ("budget 8", f"speculative chain ({tag}), gamma 7", "speculative",
             {"draft": draft, "gamma": BUDGET - 1}, False),
            ("budget 8", f"tree ({tag}), branching 2,1,1", "tree",
             {"draft": draft, "branching": (2, 1, 1)}, False),
            ("budget 8", f"tree ({tag}), beam 2 x 3", "tree",
             {"draft": draft, "beam_width": 2, "depth": 3}, False),
            ("budget 8", f"tree ({tag}), branching 1,1,1,1,1,2", "tree",
             {"draft": draft, "branching": (1, 1, 1, 1, 1, 2)}, False),
        ]
    runs += [("budget 8", "prompt-lookup, 7 tokens", "prompt-lookup", {"num_draft": BUDGET - 1},
              False),
             ("budget 8", "ngram (adaptive), 7 tokens", "ngram", {"num_draft": BUDGET - 1}, False)]
    if draft is not None:  # sampling at temperature 1: where recursive rejection matters
        runs += [
            ("sampling", "sample", "sample", {}, True),
            ("sampling", f"speculative chain ({tag}), gamma 4", "speculative",
             {"draft": draft, "gamma": CHAIN_DEPTH}, True),
            ("sampling", f"tree / RSD-C ({tag}), branching 2,2,1,1", "tree",
             {"draft": draft, "branching": (2, 2, 1, 1)}, True),
            ("sampling", f"tree / RSD-S ({tag}), beam 3 x 4", "tree",
             {"draft": draft, "beam_width": 3, "depth": CHAIN_DEPTH}, True),
        ]
    return runs


def run_seqlab(model, prompts, new_tokens, configs, setting, batch, reps):
    from seqlab.decoding import generate

    rows, greedy, base = [], None, {}
    for table, name, strategy, options, sampled in configs:
        kw = {"temperature": 1.0, "seed": 0} if sampled else {"temperature": 0}
        t, out = timed(lambda: generate(model, prompts, strategy, new_tokens, **kw, **options), reps)
        n = sum(len(o) for o in out.tokens)
        if strategy == "greedy":
            greedy = out.tokens
        s = out.stats
        calls = s.verify_calls or s.target_calls or n / batch
        row = {"setting": setting, "batch": batch, "table": table, "library": "seqlab",
               "name": name, "strategy": strategy, "sampled": sampled, "tokens_s": n / t,
               "target_calls_per_token": calls * batch / n if n else None,
               "mean_accepted": s.mean_accepted if s.verify_calls else None,
               "draft_tokens_per_call": (s.drafted / s.verify_calls / batch
                                         if s.draft_calls and s.verify_calls else None),
               "same_as_greedy": (out.tokens == greedy) if not sampled else None,
               "tokens": out.tokens}
        if strategy in ("greedy", "sample"):
            base[sampled] = row["tokens_s"]
        row["speedup"] = row["tokens_s"] / base[sampled]
        rows.append(row)
        print(f"  {setting} B={batch} {name:45s} {row['tokens_s']:8.1f} tok/s "
              f"x{row['speedup']:.2f}", flush=True)
    return rows


# -- transformers ---------------------------------------------------------------------------
def run_hf(hf, prompts, new_tokens, setting, batch, reps, seqlab_greedy, base_tok_s,
           draft_hf=None, early_exit: int | None = None, pad_id: int = 0):
    """transformers' greedy, assisted generation and prompt lookup on the same weights."""
    configs = [("depth 4", "transformers greedy", {})]
    if batch == 1:
        if draft_hf is not None:
            configs.append(("depth 4", "transformers assisted (draft), 4 tokens",
                            {"assistant_model": draft_hf, "num_assistant_tokens": CHAIN_DEPTH,
                             "num_assistant_tokens_schedule": "constant",
                             "assistant_confidence_threshold": 0.0}))
            configs.append(("budget 8", "transformers assisted (draft), 7 tokens",
                            {"assistant_model": draft_hf, "num_assistant_tokens": BUDGET - 1,
                             "num_assistant_tokens_schedule": "constant",
                             "assistant_confidence_threshold": 0.0}))
        if early_exit is not None:
            configs.append(("depth 4", f"transformers early-exit self-draft ({early_exit} layers), 4",
                            {"assistant_early_exit": early_exit, "num_assistant_tokens": CHAIN_DEPTH,
                             "num_assistant_tokens_schedule": "constant",
                             "assistant_confidence_threshold": 0.0}))
        configs += [("depth 4", "transformers prompt lookup, 4 tokens",
                     {"prompt_lookup_num_tokens": CHAIN_DEPTH}),
                    ("budget 8", "transformers prompt lookup, 7 tokens",
                     {"prompt_lookup_num_tokens": BUDGET - 1})]
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    rows = []
    for table, name, kw in configs:
        def go():
            with torch.no_grad():
                return hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=pad_id, **kw)
        t, out = timed(go, reps)
        toks = out[:, L:].tolist()
        rows.append({"setting": setting, "batch": batch, "table": table, "library": "transformers",
                     "name": name, "sampled": False, "tokens_s": batch * new_tokens / t,
                     "same_as_greedy": toks == seqlab_greedy,
                     "speedup": batch * new_tokens / t / base_tok_s, "tokens": toks})
        print(f"  {setting} B={batch} {name:45s} {rows[-1]['tokens_s']:8.1f} tok/s "
              f"x{rows[-1]['speedup']:.2f} same={rows[-1]['same_as_greedy']}", flush=True)
    return rows


# -- settings -------------------------------------------------------------------------------
def setting_pair(args):
    from transformers import AutoModelForCausalLM

    from decoding_models import distilled_draft, trained_pair
    from seqlab.models.pretrained.export import export_hf

    target, draft = trained_pair()
    draft = distilled_draft(target, draft)
    folder = Path(tempfile.mkdtemp(prefix="seqlab-decoding-"))
    export_hf(target, folder / "target")
    export_hf(draft, folder / "draft")
    hf_t = AutoModelForCausalLM.from_pretrained(folder / "target").eval()
    hf_d = AutoModelForCausalLM.from_pretrained(folder / "draft").eval()
    prompts_all = [list(p) for p in code_prompts(max(args.batches), args.prompt_bytes)]
    rows = []
    for B in args.batches:
        prompts = prompts_all[:B]
        ours = run_seqlab(target, prompts, args.new_tokens, seqlab_configs(draft, False), "pair", B,
                          args.reps)
        base = ours[0]["tokens_s"]
        rows += ours
        if not args.seqlab_only:
            rows += run_hf(hf_t, prompts, args.new_tokens, "pair", B, args.reps,
                           ours[0]["tokens"], base, draft_hf=hf_d)
    return rows


def setting_smollm2(args):
    from transformers import AutoModelForCausalLM

    from decoding_models import smollm2_draft
    from seqlab.models.layer_skip import layer_skip_draft
    from seqlab.models.pretrained import load_pretrained, resolve_source
    from seqlab.models.pretrained.export import export_hf

    target, tok = load_pretrained("smollm2")
    path = resolve_source("smollm2")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              torch_dtype=torch.float32).eval()
    texts = text_prompts(max(args.batches))
    draft = smollm2_draft(target, tok, held_out=texts)  # the prompts stay out of its training
    folder = Path(tempfile.mkdtemp(prefix="seqlab-decoding-"))
    export_hf(draft, folder / "draft")
    hf_draft = AutoModelForCausalLM.from_pretrained(folder / "draft").eval()
    keep = args.self_draft_layers
    self_draft = layer_skip_draft(target, range(keep))  # the first layers: transformers' early exit
    configs = [c for c in seqlab_configs(draft, False) if c[0] != "sampling"]
    configs.insert(2, ("depth 4", f"speculative chain (self-draft, {keep} layers), gamma 4",
                       "speculative", {"draft": self_draft, "gamma": CHAIN_DEPTH}, False))
    rows = []
    for kind, sources in (("text", texts),
                          ("code", [b.decode("utf-8", "replace") for b in
                                    code_prompts(max(args.batches), 1200)])):
        prompts_all = [tok.encode(t)[-args.prompt_tokens:] for t in sources]
        for B in args.batches:
            prompts = prompts_all[:B]
            setting = f"smollm2 {kind}"
            ours = run_seqlab(target, prompts, args.new_tokens, configs, setting, B, args.reps)
            rows += ours + run_hf(hf, prompts, args.new_tokens, setting, B, args.reps,
                                  ours[0]["tokens"], ours[0]["tokens_s"], draft_hf=hf_draft,
                                  early_exit=keep, pad_id=tok.eos_id or 0)
    return rows


def print_tables(rows):
    key = lambda r: (r["setting"], r["batch"], r["table"])  # noqa: E731
    for group in sorted({key(r) for r in rows}, key=lambda k: (k[0], k[2], k[1])):
        print(f"\n### {group[0]}, batch {group[1]}, {group[2]}\n")
        print("| library | strategy | tokens/s | speedup | target calls/token | accepted/call | "
              "draft tokens/call | same greedy |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for r in rows:
            if key(r) != group:
                continue
            f = lambda v, p=2: "" if v is None else f"{v:.{p}f}"  # noqa: E731
            same = {True: "yes", False: "NO", None: "(sampled)"}[r["same_as_greedy"]]
            print(f"| {r['library']} | {r['name']} | {r['tokens_s']:.1f} | {r['speedup']:.2f}x | "
                  f"{f(r.get('target_calls_per_token'))} | {f(r.get('mean_accepted'))} | "
                  f"{f(r.get('draft_tokens_per_call'), 1)} | {same} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["pair", "smollm2"], choices=["pair", "smollm2"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-bytes", type=int, default=128,
                    help="pair: prompt length in bytes (prompt + new tokens stay within the 256 "
                    "bytes the pair was trained on: rotary attention does not extrapolate)")
    ap.add_argument("--prompt-tokens", type=int, default=160, help="smollm2: prompt length in tokens")
    ap.add_argument("--self-draft-layers", type=int, default=8,
                    help="smollm2: layers of the target the self-draft keeps (of 30)")
    ap.add_argument("--seqlab-only", action="store_true",
                    help="pair: skip transformers (a before/after comparison of seqlab itself)")
    ap.add_argument("--reps", type=int, default=2, help="runs per strategy; the fastest counts")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "decoding.jsonl"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for setting in args.settings:  # written per setting: a stopped run keeps what it measured
        done = {"pair": setting_pair, "smollm2": setting_smollm2}[setting](args)
        with out.open("a") as fh:
            for r in done:
                fh.write(json.dumps({"benchmark": "decoding", "new_tokens": args.new_tokens,
                                     **{k: v for k, v in r.items() if k != "tokens"}}) + "\n")
        rows += done
    print_tables(rows)


if __name__ == "__main__":
    main()

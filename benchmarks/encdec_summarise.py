"""Encoder-decoder against a decoder-only model of equal parameters on docstring summaries
("Return of the Encoder", Elfeki et al. 2025, arXiv:2501.16273): summary quality, first-token
latency and decode throughput, side by side.

The task is long input, short output, real and leak-free: the Python standard library's
functions (``seqlab.tasks.stdlib_functions``), the source without its docstring (at most
``--max-source-bytes``) -> the docstring's first line, split by module. Three models train on
the same pairs for the same steps and batch (``seqlab.train.seq2seq``, byte ids plus a start
and an end id):

* ``decoder-only``: an attention LM reading ``source + [start] + summary``, loss on the summary;
* ``encdec``: an attention encoder over the source and an attention decoder with
  cross-attention in every block, within ~10% of the decoder-only model's parameters;
* ``encdec-kd``: the same encoder-decoder distilled from the decoder-only model as teacher
  (KL on the summary tokens mixed with the cross-entropy, ``--distill-weight``).

Quality: greedy decoding through ``seqlab.decoding.generate`` on the test split (the
encoder-decoder from its conditioned state, ``seqlab.models.encdec.decode``'s rows), scored by
chrF (``sacrebleu``), ROUGE-L F1 (``rouge-score``, with its standard error over the test
pairs), exact match, and how many different summaries a model wrote. Speed, all models in one
run, taking turns, on the 8 longest test sources (about 1 KB): first-token latency (source
bytes in, first summary byte out: the decoder-only model's prefill; the encoder, the cross keys
and one decoder step) at batch 1 and 8, decode tokens/s after the first token (64 tokens
forced) at batch 1 and 8, and the decoding state's size after the source.

    python benchmarks/encdec_summarise.py --threads 1     # ~30 minutes on one core
    python benchmarks/encdec_summarise.py --quick         # ~1 minute: tiny models
Writes benchmarks/out/encdec_summarise.json (``_quick`` with --quick, ``_TAG`` with --tag), the
run folders under benchmarks/out/encdec_summarise/ (``--reuse`` loads them instead of
training), a plot (``--plot``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "out"
START, END = 256, 257


def cpu_facts() -> dict:
    """The CPU's model name and whether it has AVX-512 (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return {"cpu": name, "avx512": "avx512f" in flags.split(), "avx2": "avx2" in flags.split()}


def model_sections(args) -> dict[str, dict]:
    attn = f"attention(heads={args.heads})"
    return {"decoder-only": {"kind": "lm", "dim": args.dim, "layers": f"{attn}*{args.lm_layers}"},
            "encdec": {"kind": "encdec", "dim": args.dim, "cross_heads": args.heads,
                       "encoder_layers": f"{attn}*{args.enc_layers}",
                       "decoder_layers": f"{attn}*{args.dec_layers}"}}


def train_one(name: str, model: dict, args, folder: Path, teacher: Path | None = None) -> dict:
    """Train (or with --reuse load) one model; its run facts."""
    from seqlab.train.seq2seq import RUN_FILE, PairsRunConfig, train_pairs

    out = folder / name
    if not (args.reuse and (out / RUN_FILE).is_file()):
        shutil.rmtree(out, ignore_errors=True)
        train = {"steps": args.steps, "batch_size": args.batch, "lr": args.lr,
                 "warmup": max(1, args.steps // 10), "max_source_bytes": args.max_source_bytes,
                 "eval_every": args.eval_every, "eval_pairs": args.eval_pairs, "device": "cpu",
                 "seed": 0, "teacher": str(teacher) if teacher else None,
                 "distill_weight": args.distill_weight}
        train_pairs(PairsRunConfig.from_dict({"model": model, "train": train,
                                              "out_dir": str(out)}))
    facts = json.loads((out / RUN_FILE).read_text())
    return {"folder": str(out), "train_s": facts["wall_s"], "steps": facts["step"],
            "curve": facts["evals"], "val_loss": facts["evals"][-1]["loss"]}


# -- decoding ------------------------------------------------------------------------------
def prompts(model, sources: list[list[int]]):
    """generate's rows and cached states: ``source + [start]`` for both forms; the
    encoder-decoder's sources already in their conditioned states."""
    if hasattr(model, "source_prompts"):
        return model.source_prompts(sources)
    return [s + [START] for s in sources], None


@torch.no_grad()
def run(model, sources: list[list[int]], max_new: int, eos: bool = True):
    """(GenerateOutput, seconds from source bytes to the end), greedy."""
    from seqlab.decoding import generate

    t0 = time.perf_counter()
    rows, cached = prompts(model, sources)
    out = generate(model, rows, "greedy", max_new, eos_id=END if eos else None, cached=cached)
    return out, time.perf_counter() - t0


def summaries(model, pairs, args) -> tuple[list[str], float]:
    """Greedy summaries of ``pairs``' sources, in batches of similar lengths, and the share
    that ended with the end id (the rest ran to ``--max-new-tokens``)."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    texts, ended = [""] * len(pairs), 0
    for i in range(0, len(order), args.eval_batch):
        idx = order[i:i + args.eval_batch]
        out, _ = run(model, [list(pairs[j][0].encode()) for j in idx], args.max_new_tokens)
        for j, toks in zip(idx, out.tokens):
            texts[j] = bytes(t for t in toks if t < 256).decode("utf-8", "replace").strip()
            ended += bool(toks) and toks[-1] == END
    return texts, ended / len(pairs)


def quality(hyps: list[str], refs: list[str]) -> dict:
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [100 * scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]
    return {"chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "rouge_l": statistics.fmean(rouge),
            # the standard error of the mean over test pairs: how far apart two models must be
            "rouge_l_se": statistics.stdev(rouge) / len(rouge) ** 0.5 if len(rouge) > 1 else 0.0,
            "exact": 100 * statistics.fmean(h == r for h, r in zip(hyps, refs)),
            "distinct": len(set(hyps))}


def speed(models: dict, sources: list[list[int]], args) -> dict[str, dict]:
    """Per model: first-token latency and decode tokens/s at batch 1 and 8 (medians of
    ``--reps``), and the state's size after the source. The models take turns, one call each
    per round, so that a change in the machine's load falls on all of them alike."""
    times = {name: {} for name in models}
    for model in models.values():
        run(model, sources[:1], 4)   # warm-up
    for _ in range(args.reps):
        for B in (1, 8):
            for name, model in models.items():
                t = times[name]
                t.setdefault(f"first_ms_b{B}", []).append(1000 * run(model, sources[:B], 1)[1])
                res, _ = run(model, sources[:B], args.decode_tokens, eos=False)
                s = res.stats   # the tokens after the first, over the time after the prefill
                t.setdefault(f"decode_tok_s_b{B}", []).append(
                    (s.new_tokens - B) / (s.wall_s - s.prefill_s))
    out = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    for name, model in models.items():
        rows, cached = prompts(model, sources[:1])
        with torch.no_grad():
            _, state = model(torch.tensor([rows[0][cached[0][0]:] if cached else rows[0]]),
                             cached[0][1] if cached else None)
        out[name]["state_kb"] = state.nbytes() / 1024
        out[name]["source_bytes"] = statistics.fmean(len(s) for s in sources[:8])
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, *bars) = plt.subplots(1, 4, figsize=(18, 4))
    for r in rows:
        a.plot([e["step"] for e in r["curve"]], [e["loss"] for e in r["curve"]], marker=".",
               label=f"{r['model']} ({r['params'] / 1e6:.2f}M)")
    a.set_xlabel("training step")
    a.set_ylabel("validation loss per summary byte (nats)")
    a.set_title("training, same steps and batch")
    a.legend()
    width = 0.8 / len(rows)
    for panel, keys, labels, ylabel, title in [
            (bars[0], ["chrf", "rouge_l"], ["chrF", "ROUGE-L F1"], "score (0-100)",
             "test summaries, greedy"),
            (bars[1], ["first_ms_b1", "first_ms_b8"], ["batch 1", "batch 8"],
             "ms from source bytes to the first new byte", "first-token latency, ~1 KB source"),
            (bars[2], ["decode_tok_s_b1", "decode_tok_s_b8"], ["batch 1", "batch 8"],
             "new tokens/s after the first", "decode throughput, ~1 KB source")]:
        for i, r in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(keys))]
            panel.bar(xs, [r[k] for k in keys], width, label=r["model"])
        panel.set_xticks(range(len(keys)))
        panel.set_xticklabels(labels)
        panel.set_ylabel(ylabel)
        panel.set_title(title)
        panel.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models, a few steps (a smoke run)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lm-layers", type=int, default=5)
    p.add_argument("--enc-layers", type=int, default=2)
    p.add_argument("--dec-layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-source-bytes", type=int, default=1024)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-pairs", type=int, default=128, help="validation pairs for the curve")
    p.add_argument("--distill-weight", type=float, default=0.5)
    p.add_argument("--no-distill", action="store_true", help="skip the distilled encdec")
    p.add_argument("--test-pairs", type=int, default=0, help="test pairs scored (0: all)")
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=5, help="rounds of the speed measurements")
    p.add_argument("--reuse", action="store_true", help="load trained run folders when present")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", default=None)
    p.add_argument("--tag", default="", help="name suffix of the JSON, plot and run folders")
    args = p.parse_args()
    if args.quick:
        args.dim, args.heads, args.lm_layers, args.enc_layers, args.dec_layers = 32, 2, 3, 1, 1
        args.steps, args.eval_every, args.eval_pairs, args.test_pairs = 20, 10, 16, 16
        args.max_new_tokens, args.decode_tokens, args.reps = 24, 16, 2
    stem = "_".join(["encdec_summarise"] + ["quick"] * args.quick + [args.tag] * bool(args.tag))
    args.plot = args.plot or str(OUT / f"{stem}.png")
    folder = OUT / stem
    torch.set_num_threads(args.threads)

    from seqlab.models import load
    from seqlab.train.checkpoint import resolve_model_dir
    from seqlab.tasks.stdlib_functions import summarisation_pairs

    start = time.perf_counter()
    test = summarisation_pairs("test", args.max_source_bytes)
    scored = test[:args.test_pairs] if args.test_pairs else test
    # the longest test sources for the speed runs (about 1 KB at max_source_bytes 1024)
    long = sorted((list(s.encode()) for s, _ in test), key=len)[-8:]
    sections = model_sections(args)
    plan = [("decoder-only", sections["decoder-only"], None), ("encdec", sections["encdec"], None)]
    if not args.no_distill:
        plan.append(("encdec-kd", sections["encdec"], folder / "decoder-only"))
    rows, models = [], {}
    for name, section, teacher in plan:
        row = {"model": name, **train_one(name, section, args, folder, teacher)}
        model = load(resolve_model_dir(row["folder"])).eval()
        row["params"] = model.num_parameters()
        t0 = time.perf_counter()
        hyps, row["ended"] = summaries(model, scored, args)
        row["eval_s"] = time.perf_counter() - t0
        row.update(quality(hyps, [r for _, r in scored]))
        row["summaries"] = [{"reference": r, "summary": h} for (_, r), h in zip(scored, hyps)]
        rows.append(row)
        models[name] = model
    speeds = speed(models, long, args)
    for row in rows:
        row.update(speeds[row["model"]])
    base = rows[0]["params"]
    facts = {**cpu_facts(), "threads": torch.get_num_threads(), "test_pairs": len(scored),
             "total_s": time.perf_counter() - start}
    print(f"\n{facts['cpu']} (AVX-512: {'yes' if facts['avx512'] else 'no'}), "
          f"{facts['threads']} thread(s), {facts['total_s']:.0f} s in all; {len(scored)} test "
          f"pairs, sources <= {args.max_source_bytes} bytes; speed on sources of "
          f"{rows[0]['source_bytes']:.0f} bytes on average")
    print("| model | params | train s | val loss | chrF | ROUGE-L | exact % | distinct | ended % | "
          "first token b1 ms | b8 ms | decode tok/s b1 | b8 | state KB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M ({r['params'] / base - 1:+.0%}) | "
              f"{r['train_s']:.0f} | {r['val_loss']:.3f} | {r['chrf']:.1f} | "
              f"{r['rouge_l']:.1f} ± {r['rouge_l_se']:.1f} | {r['exact']:.1f} | "
              f"{r['distinct']} | {100 * r['ended']:.0f} | {r['first_ms_b1']:.1f} | {r['first_ms_b8']:.1f} | "
              f"{r['decode_tok_s_b1']:.0f} | {r['decode_tok_s_b8']:.0f} | {r['state_kb']:.0f} |")
    for r in rows[1:]:
        print(f"{r['model']} / decoder-only: first token {base_ratio(rows[0], r, 'first_ms_b1')} "
              f"(b1), {base_ratio(rows[0], r, 'first_ms_b8')} (b8) of the time; decode "
              f"{r['decode_tok_s_b1'] / rows[0]['decode_tok_s_b1']:.2f}x (b1), "
              f"{r['decode_tok_s_b8'] / rows[0]['decode_tok_s_b8']:.2f}x (b8)")
    plot(rows, Path(args.plot))
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "facts": facts,
                                                  "rows": rows}, indent=2))


def base_ratio(base: dict, row: dict, key: str) -> str:
    return f"{row[key] / base[key]:.2f}x"


if __name__ == "__main__":
    main()

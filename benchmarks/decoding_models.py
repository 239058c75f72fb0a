"""The target/draft byte-LM pair the decoding benchmark uses, trained once and cached.

Target: 6 attention layers, width 384 (~10.7M parameters). Draft: 2 attention
layers, width 128 (~0.43M). Both are trained with seqlab's trainer on the
default corpus (the Python standard library's source), so the benchmark
measures code continuation. The runs live in ``$SEQLAB_CACHE/decoding-pair``
(default ``~/.cache/seqlab``); a finished run is reused, an interrupted one resumed.

    python benchmarks/decoding_models.py            # train (or reuse) both
"""

from __future__ import annotations

import os
from pathlib import Path

PAIR = {
    "target": {"model": {"dim": 384, "layers": ["attention"] * 6,
                         "mixer_options": {"attention": {"heads": 6}}},
               "train": {"steps": 700, "batch_size": 8, "seq_len": 256, "lr": 2e-3, "warmup": 50,
                         "eval_every": 0, "ckpt_every": 100, "log_every": 10}},
    "draft": {"model": {"dim": 128, "layers": ["attention"] * 2,
                        "mixer_options": {"attention": {"heads": 2}}},
              "train": {"steps": 1500, "batch_size": 16, "seq_len": 256, "lr": 3e-3, "warmup": 50,
                        "eval_every": 0, "ckpt_every": 250, "log_every": 10}},
}


def cache_dir() -> Path:
    root = os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab"
    return Path(root) / "decoding-pair"


def trained_pair(progress: bool = True):
    """(target, draft) seqlab LMs, trained now unless a finished run is cached."""
    from seqlab.models.io import load
    from seqlab.train.checkpoint import latest_checkpoint
    from seqlab.train.config import RunConfig
    from seqlab.train.trainer import Trainer

    models = []
    for name, spec in PAIR.items():
        out = cache_dir() / name
        run = RunConfig.from_dict({**spec, "out_dir": str(out)})
        ckpt = latest_checkpoint(out)
        done = ckpt is not None and ckpt.name == f"step-{run.train.steps}"
        if not done:
            print(f"training the {name} model into {out} ({run.train.steps} steps)")
            result = Trainer(run, resume=ckpt is not None, progress=progress).fit()
            if result.stopped != "done":
                raise SystemExit(f"training the {name} stopped early ({result.stopped}); rerun to "
                                 "resume")
            ckpt = latest_checkpoint(out)
        models.append(load(ckpt).eval())
    return tuple(models)


if __name__ == "__main__":
    t, d = trained_pair()
    print(f"target {t.num_parameters():,} parameters, draft {d.num_parameters():,}")

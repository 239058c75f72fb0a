"""The target/draft byte-LM pair the decoding benchmark uses, trained once and cached.

Target: 6 attention layers, width 384 (~10.7M parameters). Draft: 2 attention
layers, width 128 (~0.43M). Both are trained with seqlab's trainer on the
default corpus (the Python standard library's source), so the benchmark
measures code continuation. The runs live in ``$SEQLAB_CACHE/decoding-pair``
(default ``~/.cache/seqlab``); a finished run is reused, an interrupted one resumed.

    python benchmarks/decoding_models.py            # train (or reuse) both

The draft is then distilled from the target (DistillSpec, Zhou et al. 2024): more
steps on the same corpus with the target's next-byte distribution as the label
(forward KL), which raises how often the draft agrees with the target, which is
what speculative decoding pays for. The distilled draft is ``draft-distilled``.
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


DISTILL = {"steps": 600, "batch_size": 16, "seq_len": 256, "lr": 1e-3, "warmup": 20}


def distilled_draft(target, draft, progress: bool = True):
    """The draft after DISTILL steps of forward-KL distillation from the target (cached)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from seqlab.models.io import load, save
    from seqlab.tasks.corpus import DataConfig, load_corpus
    from seqlab.train.config import TrainConfig
    from seqlab.train.trainer import lr_at, make_optimizer

    out = cache_dir() / "draft-distilled"
    if (out / "config.json").is_file():
        return load(out).eval()
    cfg = TrainConfig(**DISTILL, eval_every=0, ckpt_every=0)
    corpus = load_corpus(DataConfig(), progress=False)
    draft.train()
    opt = make_optimizer(draft, cfg)
    bar = tqdm(range(cfg.steps), desc="distill draft", disable=not progress)
    for step in bar:
        x, _ = corpus.batch("train", step, cfg.batch_size, cfg.seq_len, seed=1)
        with torch.no_grad():
            p_log = target(x)[0].log_softmax(-1)
        q_log = draft(x)[0].log_softmax(-1)
        loss = F.kl_div(q_log.flatten(0, 1), p_log.flatten(0, 1), log_target=True,
                        reduction="batchmean")
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        opt.step()
        bar.set_postfix(kl=f"{loss.item():.3f}")
    save(draft.eval(), out)
    return draft


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
        done = ckpt is not None and int(ckpt.name.split("-")[-1]) >= run.train.steps
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
    distilled_draft(t, d)

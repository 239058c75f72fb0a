"""The target/draft byte-LM pair the decoding benchmark uses, trained once and cached.

Target: 6 attention layers, width 384 (~10.7M parameters). Draft: 2 attention
layers, width 128 (~0.43M). Both are trained with seqlab's trainer on the
default corpus (the Python standard library's source), so the benchmark
measures code continuation. The runs live in ``$SEQLAB_CACHE/decoding-pair``
(default ``~/.cache/seqlab``); a finished run is reused, an interrupted one resumed.

    python benchmarks/decoding_models.py            # train (or reuse) both
    python benchmarks/decoding_models.py --smollm2  # and the SmolLM2 draft (~15 min)

The draft is then distilled from the target (DistillSpec, Zhou et al. 2024): more
steps on the same corpus with the target's next-byte distribution as the label
(forward KL), which raises how often the draft agrees with the target, which is
what speculative decoding pays for. The distilled draft is ``draft-distilled``.

For SmolLM2-135M as target, :func:`smollm2_draft` trains a small draft on
SmolLM2's own tokenizer (cached as ``smollm2-draft``): 2 attention layers at
width 256 whose tied embedding starts as the projection of SmolLM2's embedding
onto its top 256 principal directions, so token similarity is known from step
one; then next-token training on standard-library code and the Python
documentation's English (minus the benchmark's prompts). Distillation from the
target would raise agreement further but costs a 135M forward per batch, more
than this CPU can spare.
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

    from seqlab.models.io import load, save
    from seqlab.tasks.corpus import DataConfig, load_corpus
    from seqlab.train.config import TrainConfig

    out = cache_dir() / "draft-distilled"
    if (out / "config.json").is_file():
        return load(out).eval()
    cfg = TrainConfig(**DISTILL, eval_every=0, ckpt_every=0)
    corpus = load_corpus(DataConfig(), progress=False)

    def kl(step):
        x, _ = corpus.batch("train", step, cfg.batch_size, cfg.seq_len, seed=1)
        with torch.no_grad():
            p_log = target(x)[0].log_softmax(-1)
        q_log = draft(x)[0].log_softmax(-1)
        return F.kl_div(q_log.flatten(0, 1), p_log.flatten(0, 1), log_target=True,
                        reduction="batchmean")

    _train(draft, cfg, kl, "distill draft", "kl", progress)
    save(draft.eval(), out)
    return draft


def _train(model, cfg, step_loss, desc: str, label: str, progress: bool) -> None:
    """AdamW with seqlab's schedule and clipping for ``cfg.steps`` steps of ``step_loss(step)``."""
    import torch
    from tqdm import tqdm

    from seqlab.train.optim import lr_at, make_optimizer

    model.train()
    opt = make_optimizer(model, cfg)
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress)
    for step in bar:
        loss = step_loss(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix({label: f"{loss.item():.3f}"})


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


SMOLLM2_DRAFT = {"dim": 256, "layers": 2, "heads": 4, "steps": 700, "batch_size": 12, "seq_len": 128,
                 "lr": 3e-3, "warmup": 50, "code_bytes": 8_000_000}


def _draft_tokens(tok, held_out: list[str], code_bytes: int):
    """(code ids, text ids) as int64 tensors: stdlib train-split code and pydoc topics."""
    import numpy as np
    import torch
    from pydoc_data.topics import topics

    from seqlab.tasks.corpus import DataConfig, load_corpus

    train = load_corpus(DataConfig(), progress=False).split("train")
    stride = len(train) // 40          # 40 windows spread over the whole split
    windows = [bytes(train[i * stride:i * stride + code_bytes // 40]).decode("utf-8", "replace")
               for i in range(40)]
    texts = [t for t in topics.values() if not any(t.startswith(h[:200]) for h in held_out)]

    def ids(parts):
        enc = tok.bpe.encode_batch([p for part in parts for p in
                                    (part[i:i + 20000] for i in range(0, len(part), 20000))])
        return torch.from_numpy(np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in enc]))

    return ids(windows), ids(texts)


def smollm2_draft(target, tok, held_out: list[str] = (), progress: bool = True):
    """A 2-layer draft on SmolLM2's vocabulary, trained now unless cached (see the module doc).

    The loss is softmax over the token ids that occur in the training data (a
    fifth of the 49,152), which cuts the largest matmul; ids that never occur keep
    their principal-component embedding, so at decode time the full head still
    ranks them sensibly.
    """
    import torch
    import torch.nn.functional as F

    from seqlab.models.io import load, save
    from seqlab.models.lm import LM, LMConfig
    from seqlab.train.config import TrainConfig

    out = cache_dir() / "smollm2-draft"
    if (out / "config.json").is_file():
        return load(out).eval()
    spec = SMOLLM2_DRAFT
    code, text = _draft_tokens(tok, list(held_out), spec["code_bytes"])
    used = torch.unique(torch.cat([code, text]))
    remap = torch.full((target.cfg.vocab_size,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    print(f"SmolLM2 draft data: {len(code):,} code and {len(text):,} text tokens, "
          f"{len(used):,} distinct ids")
    torch.manual_seed(0)
    draft = LM(LMConfig(vocab_size=target.cfg.vocab_size, dim=spec["dim"],
                        layers=("attention",) * spec["layers"],
                        mixer_options={"attention": {"heads": spec["heads"]}}))
    with torch.no_grad():   # top principal directions of the target's (tied) embedding
        emb = target.embed.weight.float()
        _, _, v = torch.linalg.svd(emb - emb.mean(0), full_matrices=False)
        proj = emb @ v[:spec["dim"]].T
        draft.embed.weight.copy_(proj / proj.std() * draft.embed.weight.std())
    cfg = TrainConfig(steps=spec["steps"], batch_size=spec["batch_size"], seq_len=spec["seq_len"],
                      lr=spec["lr"], warmup=spec["warmup"], eval_every=0, ckpt_every=0)
    gen = torch.Generator().manual_seed(0)
    n = spec["seq_len"] + 1

    def next_token_loss(step):
        rows = []
        for i in range(cfg.batch_size):  # half code, half English
            src = code if i % 2 == 0 else text
            start = int(torch.randint(0, len(src) - n, (1,), generator=gen))
            rows.append(src[start:start + n])
        batch = torch.stack(rows)
        hidden, _ = draft.features(batch[:, :-1])
        logits = hidden.flatten(0, 1) @ draft.head.weight[used].T
        return F.cross_entropy(logits.float(), remap[batch[:, 1:].flatten()])

    _train(draft, cfg, next_token_loss, "train SmolLM2 draft", "loss", progress)
    save(draft.eval(), out)
    return draft


if __name__ == "__main__":
    import sys

    t, d = trained_pair()
    print(f"target {t.num_parameters():,} parameters, draft {d.num_parameters():,}")
    distilled_draft(t, d)
    if "--smollm2" in sys.argv:
        sys.path.insert(0, str(Path(__file__).parent))
        from decoding import text_prompts

        from seqlab.models.pretrained import load_pretrained

        target, tok = load_pretrained("smollm2")
        draft = smollm2_draft(target, tok, held_out=text_prompts(8))
        print(f"SmolLM2 draft: {draft.num_parameters():,} parameters")

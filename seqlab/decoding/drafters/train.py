"""Train a drafter on a target's own hidden states in bounded CPU time.

Two stages, because the target is the expensive part:

1. ``cache_features``: run the target once over real text (default: the Python
   documentation shipped in ``pydoc_data`` and the standard library's own code, the
   text every user of this machine has) and store, per position, its hidden state
   (float16), the token, and the target's own greedy choice of the next token
   (``labels``), plus its head, as safetensors beside a JSON manifest. Every kind and
   every later run reuse the cache (keyed by target, data and sizes).
2. ``train_drafter``: fit the small drafter to the cache: the target's choice of token
   t+2+j from the hidden states up to t (and, for Chimera, the tokens t-1..t+1+j), a
   cross-entropy over the ``draft_vocab`` most frequent choices, weighted 0.8**j like
   Medusa (an early miss makes every later draft worthless). The labels are the
   target's choices, not the text's tokens, since acceptance means agreeing with the
   target (self-distillation).

Example:
    >>> cache = cache_features(model, tokenizer, default_texts("train"), cfg, "smollm2")
    >>> drafter, report = train_drafter(cache, cfg)
    >>> drafter.save("drafters/smollm2-heads")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from seqlab.config import Config, ConfigError, option, require
from seqlab.decoding.drafters.base import Context, DrafterConfig, HiddenDrafter, build

IGNORE = -100
CACHE_FILE = "features.safetensors"
CACHE_META = "features.json"


@dataclass(frozen=True)
class DraftTrainConfig(Config):
    """How ``seqlab train-draft`` caches features and trains a drafter."""

    kind: str = option("heads", "drafter kind: heads, chimera or transfer")
    steps: int = option(3000, "optimizer steps at most")
    time_limit: float = option(600.0, "seconds of training at most (the cache not counted)")
    batch: int = option(256, "positions per step")
    lr: float = option(3e-3, "Adam learning rate")
    depth: int = option(4, "tokens the drafter drafts per round")
    window: int = option(8, "hidden states it reads (chimera, transfer; heads read 1)")
    width: int = option(256, "inner width of its layers")
    draft_vocab: int = option(4096, "rows of its head: the target's most frequent choices")
    seq_len: int = option(256, "tokens per cached sequence")
    cache_tokens: int = option(32_768, "tokens of text run through the target once")
    val_fraction: float = option(0.1, "cached sequences held out to measure the drafter")
    seed: int = option(0, "seed of the initialisation and the batches")

    def validate(self) -> None:
        from seqlab.decoding.drafters import TRAINED

        require(self.kind in TRAINED, self, "kind", f"one of {', '.join(sorted(TRAINED))}")
        for name in ("steps", "batch", "depth", "window", "width", "draft_vocab"):
            require(getattr(self, name) >= 1, self, name, "an int >= 1")
        require(self.time_limit > 0, self, "time_limit", "seconds > 0")
        require(self.lr > 0, self, "lr", "a number > 0")
        require(self.seq_len > self.depth + 2, self, "seq_len", "an int > depth + 2")
        require(self.cache_tokens >= 2 * self.seq_len, self, "cache_tokens",
                "at least two sequences (2 * seq_len)")
        require(0 <= self.val_fraction < 1, self, "val_fraction", "a number in [0, 1)")


# -- data ------------------------------------------------------------------------------------
def held_out(name: str) -> bool:
    """Whether a document (a topic, a file) is in the held-out tenth (a stable crc32, so the
    benchmark's prompts are never trained on)."""
    return zlib.crc32(name.encode()) % 10 == 0


def default_texts(split: str = "train") -> list[str]:
    """English documentation (``pydoc_data`` topics) and standard-library code, alternating,
    of one split ("train" or "val", by ``held_out``)."""
    from pydoc_data.topics import topics

    from seqlab.tasks.corpus import stdlib_dir

    want = split == "val"
    docs = [t for name, t in sorted(topics.items()) if held_out(name) == want]
    root = stdlib_dir()
    code = []
    for path in sorted(root.glob("*.py")):   # top-level modules: varied, no tests
        rel = str(path.relative_to(root))
        if held_out(rel) == want:
            try:
                code.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    out = []
    for i in range(max(len(docs), len(code))):
        out += [x[i] for x in (docs, code) if i < len(x)]
    return out


def read_texts(path: str | Path) -> list[str]:
    """The UTF-8 text files at ``path`` (a file or a folder, searched recursively).

    Raises:
        DataError: nothing readable there.
    """
    from seqlab.tasks.corpus import DataError

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"--data {path}: no such file or folder; give a text file or a folder "
                        "of them (or leave --data out for the standard library's docs and code)")
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"--data {path}: no UTF-8 text found there")
    return texts


def _sequences(tokenizer, texts: list[str], seq_len: int, total: int) -> torch.Tensor:
    """(N, seq_len) token windows: the texts' ids one after another, cut into windows."""
    ids: list[int] = []
    for t in texts:
        ids += tokenizer.encode(t)
        if len(ids) >= total:
            break
    n = min(len(ids), total) // seq_len
    if n < 2:
        from seqlab.tasks.corpus import DataError

        raise DataError(f"the training text holds {len(ids)} tokens; at least {2 * seq_len} are "
                        "needed (two sequences): give more text or a smaller --seq-len")
    return torch.tensor(ids[:n * seq_len]).view(n, seq_len)


# -- stage 1: the target's features, once -------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab") / "draft-features"


def head_matrix(model, hidden_size: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's head as (weight (V, H), bias (V,)) through the protocol alone: the head is
    linear, so ``logits(0)`` is its bias and ``logits(e_i) - logits(0)`` its i-th column."""
    device = model.device
    eye = torch.eye(hidden_size, device=device, dtype=dtype)
    with torch.no_grad():
        bias = model.logits(torch.zeros(1, hidden_size, device=device, dtype=dtype))[0]
        weight = (model.logits(eye) - bias).T
    return weight.float().cpu(), bias.float().cpu()


def cache_features(model, tokenizer, texts: list[str], cfg: DraftTrainConfig, target: str,
                   folder: str | Path | None = None, progress: bool = True,
                   batch: int = 4) -> Path:
    """Run ``model`` over ``texts`` once and store what training needs (see the module
    docstring); returns the folder. An existing cache of the same target, text and sizes is
    reused as it is."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    if not model.capabilities.features:
        raise ConfigError(f"the target ({type(model).__name__}) does not declare the features "
                          "capability, so a drafter cannot read its hidden states")
    seqs = _sequences(tokenizer, texts, cfg.seq_len, cfg.cache_tokens)
    key = hashlib.sha256(json.dumps([target, cfg.seq_len, cfg.cache_tokens]).encode()
                         + seqs.numpy().tobytes()).hexdigest()[:16]
    folder = Path(folder) if folder is not None else cache_dir() / key
    if (folder / CACHE_META).is_file() and (folder / CACHE_FILE).is_file():
        if json.loads((folder / CACHE_META).read_text()).get("key") == key:
            return folder
    hiddens, labels = [], []
    bar = tqdm(total=seqs.numel(), unit="tok", desc="target features", disable=not progress,
               dynamic_ncols=True)
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            x = seqs[i:i + batch].to(model.device)
            h, _ = model.features(x)
            labels.append(model.logits(h).argmax(-1).cpu())
            hiddens.append(h.to(torch.float16).cpu())
            bar.update(x.numel())
    bar.close()
    hidden = torch.cat(hiddens)
    weight, bias = head_matrix(model, hidden.shape[-1])
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"hidden": hidden.contiguous(), "tokens": seqs.contiguous(),
               "labels": torch.cat(labels).contiguous(),
               "head_weight": weight.to(torch.float16).contiguous(), "head_bias": bias.contiguous()},
              str(folder / CACHE_FILE))
    (folder / CACHE_META).write_text(json.dumps({
        "key": key, "target": target, "hidden_size": hidden.shape[-1],
        "vocab_size": weight.shape[0], "sequences": len(seqs), "seq_len": cfg.seq_len}, indent=2))
    return folder


# -- stage 2: the drafter -------------------------------------------------------------------------
class _Batches:
    """Training examples drawn from the cache: position t of sequence n, with its window."""

    def __init__(self, data: dict, rows: torch.Tensor, cfg: DrafterConfig, slot: torch.Tensor):
        self.hidden, self.tokens, self.rows = data["hidden"], data["tokens"], rows
        self.labels = slot[data["labels"]]     # the choices as draft-vocabulary rows (or IGNORE)
        self.W, self.k = cfg.window, cfg.depth
        self.T = self.tokens.shape[1]

    def draw(self, n: int, generator: torch.Generator):
        """(context, trigrams (n, k, 3), targets (n, k)) at random positions of ``rows``."""
        seq = self.rows[torch.randint(len(self.rows), (n,), generator=generator)]
        t = torch.randint(0, self.T - self.k - 1, (n,), generator=generator)
        win = t[:, None] + torch.arange(-self.W + 1, 1)[None]              # (n, W)
        mask = win >= 0
        hidden = self.hidden[seq[:, None], win.clamp(min=0)].float() * mask[..., None]
        # draft step j predicts the target's choice at t+1+j after the tokens t+j-1 .. t+j+1
        steps = t[:, None] + torch.arange(self.k)[None]                     # (n, k)
        tri_pos = steps[..., None] + torch.arange(-1, 2)                    # (n, k, 3)
        trigrams = self.tokens[seq[:, None, None], tri_pos.clamp(min=0)] * (tri_pos >= 0)
        targets = self.labels[seq[:, None], steps + 1]
        return Context(hidden, mask, trigrams[:, 0]), trigrams, targets


def _loss(drafter: HiddenDrafter, ctx: Context, trigrams, targets, weights) -> torch.Tensor:
    logits = drafter.small_logits(drafter.pseudo_teacher(ctx, trigrams))   # (n, k, N)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                          reduction="none").view(targets.shape)
    valid = (targets != IGNORE).float()
    return ((nll * valid).sum(0) / valid.sum(0).clamp(min=1) * weights).sum() / weights.sum()


@torch.no_grad()
def evaluate(drafter: HiddenDrafter, batches: _Batches, n: int = 2048, seed: int = 1) -> dict:
    """Held-out loss and, per draft depth, how often the drafter's top choice is the target's
    and how often depths 0..j all are (the chain it would get accepted)."""
    gen = torch.Generator().manual_seed(seed)
    ctx, tri, targets = batches.draw(n, gen)
    k = drafter.cfg.depth
    weights = 0.8 ** torch.arange(k, dtype=torch.float32)
    loss = float(_loss(drafter, ctx, tri, targets, weights))
    if drafter.autoregressive:   # its own drafts feed the next step, as when decoding
        toks, _ = drafter.propose(ctx, k, _greedy(), None)
        pred = toks
    else:
        pred = drafter.vocab_ids[drafter.small_logits(drafter.pseudo(ctx)).argmax(-1)]
    truth = torch.where(targets == IGNORE, -1, drafter.vocab_ids[targets.clamp(min=0)])
    hit = (pred == truth).float()
    return {"loss": loss, "top1": hit.mean(0).tolist(), "chain": hit.cumprod(1).mean(0).tolist(),
            "accepted_per_call": float(hit.cumprod(1).sum(1).mean())}


def _greedy():
    from seqlab.decoding.sampling import SamplingConfig

    return SamplingConfig(temperature=0.0)


def train_drafter(cache: str | Path, cfg: DraftTrainConfig, progress: bool = True
                  ) -> tuple[HiddenDrafter, dict]:
    """A drafter of ``cfg.kind`` fitted to the cached features; returns it and a report
    (losses, held-out figures before and after, steps, seconds)."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    cache = Path(cache)
    meta = json.loads((cache / CACHE_META).read_text())
    data = load_file(str(cache / CACHE_FILE))
    H, V = meta["hidden_size"], meta["vocab_size"]
    torch.manual_seed(cfg.seed)
    # the draft vocabulary: the target's most frequent choices
    counts = torch.bincount(data["labels"].flatten(), minlength=V)
    n_vocab = min(cfg.draft_vocab, int((counts > 0).sum()))
    vocab_ids = counts.topk(n_vocab).indices.sort().values
    slot = torch.full((V,), IGNORE, dtype=torch.long)
    slot[vocab_ids] = torch.arange(n_vocab)
    dcfg = DrafterConfig(kind=cfg.kind, hidden_size=H, vocab_size=V, draft_vocab=n_vocab,
                         depth=cfg.depth, window=1 if cfg.kind == "heads" else cfg.window,
                         width=cfg.width, target=meta["target"])
    drafter = build(dcfg)
    drafter.set_head(vocab_ids, data["head_weight"][vocab_ids].float(), data["head_bias"][vocab_ids])
    n_seq = data["tokens"].shape[0]
    n_val = max(1, int(round(n_seq * cfg.val_fraction))) if cfg.val_fraction > 0 else 0
    order = torch.randperm(n_seq, generator=torch.Generator().manual_seed(cfg.seed))
    train_rows, val_rows = order[n_val:], order[:n_val] if n_val else order[:1]
    train_b = _Batches(data, train_rows, dcfg, slot)
    val_b = _Batches(data, val_rows, dcfg, slot)
    coverage = float((slot[data["labels"]] != IGNORE).float().mean())
    before = evaluate(drafter.eval(), val_b)
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    weights = 0.8 ** torch.arange(cfg.depth, dtype=torch.float32)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    drafter.train()
    losses, t0, step = [], time.perf_counter(), 0
    bar = tqdm(total=cfg.steps, unit="step", desc=f"train {cfg.kind}", disable=not progress,
               dynamic_ncols=True)
    while step < cfg.steps and time.perf_counter() - t0 < cfg.time_limit:
        # cosine decay over the step budget (the time limit may stop it earlier)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        ctx, tri, targets = train_b.draw(cfg.batch, gen)
        loss = _loss(drafter, ctx, tri, targets, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    drafter.eval()
    after = evaluate(drafter, val_b)
    head = losses[:min(20, len(losses))]
    tail = losses[-min(20, len(losses)):]
    report = {"kind": cfg.kind, "steps": step, "seconds": seconds, "target": meta["target"],
              "cache": str(cache), "draft_vocab": n_vocab, "vocab_coverage": coverage,
              "train_loss_first": sum(head) / max(len(head), 1),
              "train_loss_last": sum(tail) / max(len(tail), 1),
              "held_out_before": before, "held_out_after": after, "config": cfg.to_dict()}
    return drafter, report

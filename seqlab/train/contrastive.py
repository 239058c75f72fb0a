"""Contrastive tuning of a text embedder: InfoNCE with in-batch and self-mined hard negatives.

Each step takes ``batch_size`` (query, document) pairs. A query's positive is its document;
its negatives are the other documents of the batch and ``hard_negatives`` documents the model
itself ranks high for it (mined over the training documents every ``mine_every`` steps with
the current weights: "self-aware" hard negatives, From Generator to Embedder). A candidate
that scores above ``false_negative_ratio`` times the positive's score is skipped as a likely
false negative (a duplicate or a near-identical function). The loss is cross-entropy over
``q · [d; n] / temperature``.

``train_layers`` limits the gradient to the top blocks (and the final norm): on a CPU, tuning
SmolLM2's last 4 of 30 blocks costs a forward pass plus a seventh of a backward pass.

Example:
    >>> losses = tune(embedder, queries, documents, ContrastiveConfig(steps=100))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from seqlab.config import Config, require
from seqlab.models.embedder import Embedder


@dataclass(frozen=True)
class ContrastiveConfig(Config):
    """Options of :func:`tune`."""

    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    temperature: float = 0.05
    hard_negatives: int = 1          # per query; 0: in-batch negatives only
    mine_every: int = 50             # steps between minings (with the current weights)
    mine_pool: int = 20              # a query's top-ranked candidates the hard ones come from
    false_negative_ratio: float = 0.95
    train_layers: int | None = None  # None: every parameter; N: the top N blocks + final norm
    seed: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "mine_every", "mine_pool"):
            require(getattr(self, name) > 0, self, name, "a positive int")
        require(self.lr > 0, self, "lr", "a positive number")
        require(self.temperature > 0, self, "temperature", "a positive number")
        require(self.hard_negatives >= 0, self, "hard_negatives", "an int >= 0")
        require(0 < self.false_negative_ratio <= 1, self, "false_negative_ratio", "in (0, 1]")
        require(self.train_layers is None or self.train_layers >= 0, self, "train_layers",
                "None or an int >= 0")


def trainable_parameters(embedder: Embedder, train_layers: int | None) -> list[torch.nn.Parameter]:
    """The parameters tuning updates (the others get ``requires_grad = False``)."""
    model = embedder.model
    if train_layers is None:
        keep = list(model.parameters())
    else:
        blocks = list(model.blocks)[len(model.blocks) - train_layers:] if train_layers else []
        keep = [p for b in blocks for p in b.parameters()] + list(model.norm.parameters())
    ids = {id(p) for p in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return keep


@torch.no_grad()
def mine_hard_negatives(embedder: Embedder, query_ids: list[list[int]],
                        doc_ids: list[list[int]], cfg: ContrastiveConfig) -> list[list[int]]:
    """For each query, up to ``hard_negatives`` documents the embedder ranks high for it, best
    first, skipping its own document and likely false negatives (see the module docstring)."""
    scores = embedder.embed_ids(query_ids) @ embedder.embed_ids(doc_ids).T                                                        # (N, N)
    positive = scores.diagonal().clone()
    scores.fill_diagonal_(-math.inf)
    scores[scores > cfg.false_negative_ratio * positive[:, None].clamp(min=0)] = -math.inf
    top = scores.topk(min(cfg.mine_pool, scores.shape[1]), dim=1)
    return [[j for s, j in zip(srow.tolist(), jrow.tolist()) if s > -math.inf][:cfg.hard_negatives]
            for srow, jrow in zip(top.values, top.indices)]


def tune(embedder: Embedder, queries: list[str], documents: list[str],
         cfg: ContrastiveConfig = ContrastiveConfig(), progress: bool = True) -> list[float]:
    """Tune ``embedder.model`` in place on (query, document) pairs; returns the step losses.

    Raises:
        ValueError: unequal numbers of queries and documents, or fewer pairs than a batch.
    """
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents: tuning needs "
                         "one document per query")
    if len(queries) < cfg.batch_size:
        raise ValueError(f"{len(queries)} pairs are fewer than batch_size = {cfg.batch_size}")
    q_ids = [embedder.token_ids(t, "query") for t in queries]
    d_ids = [embedder.token_ids(t, "document") for t in documents]
    params = trainable_parameters(embedder, cfg.train_layers)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = embedder.model
    losses: list[float] = []
    hard: list[list[int]] = [[] for _ in queries]
    order = torch.randperm(len(queries), generator=gen).tolist()
    pos = 0
    bar = tqdm(range(cfg.steps), desc="tune", unit="step", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        if cfg.hard_negatives and step % cfg.mine_every == 0:
            t0 = time.perf_counter()
            hard = mine_hard_negatives(embedder, q_ids, d_ids, cfg)
            if progress:
                bar.write(f"mined hard negatives in {time.perf_counter() - t0:.0f} s")
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(queries), generator=gen).tolist(), 0
        rows = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        negatives = [j for i in rows for j in hard[i] if j not in rows]
        model.train()
        q = embedder.forward([q_ids[i] for i in rows])
        d = embedder.forward([d_ids[i] for i in rows] + [d_ids[j] for j in negatives])
        logits = q @ d.T / cfg.temperature                                  # (B, B + negatives)
        loss = F.cross_entropy(logits.float(), torch.arange(len(rows), device=logits.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses

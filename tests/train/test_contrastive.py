"""Contrastive tuning: self-mined hard negatives, frozen layers, and a retrieval gain."""

import random

import torch

from seqlab.models.embedder import EmbedConfig, Embedder
from seqlab.models.lm import build_lm
from seqlab.tokenizer import Tokenizer
from seqlab.train.contrastive import ContrastiveConfig, mine_hard_negatives, tune


def embedder(**cfg):
    torch.manual_seed(0)
    lm = build_lm(vocab_size=256, dim=32, layers=["attention(heads=2)", "attention(heads=2)"])
    return Embedder(lm, Tokenizer(), EmbedConfig(mask="bidirectional", **cfg))


def pairs(n=48, seed=0):
    """Query: a made-up name; document: a function of that name among shared noise."""
    rng = random.Random(seed)
    names = ["".join(rng.choice("abcdefghijklmnop") for _ in range(5)) for _ in range(n)]
    return names, [f"def {name}(x):\n    return x + {rng.randint(0, 9)}" for name in names]


def top1(emb, queries, docs):
    return ((emb.embed(queries, "query") @ emb.embed(docs).T).argmax(1)
            == torch.arange(len(queries))).float().mean().item()


def test_tuning_with_hard_negatives_lifts_retrieval():
    q, d = pairs()
    emb = embedder()
    before = top1(emb, q, d)
    losses = tune(emb, q, d, ContrastiveConfig(steps=60, batch_size=8, lr=3e-3, mine_every=20),
                  progress=False)
    after = top1(emb, q, d)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert after > max(before + 0.3, 0.6), (before, after)


def test_mined_negatives_skip_the_positive_and_likely_false_negatives():
    q, d = pairs(16)
    d[5] = d[3]                          # two queries share one document: not a negative of 3
    emb = embedder()
    ids = lambda texts, kind: [emb.token_ids(t, kind) for t in texts]
    cfg = ContrastiveConfig(hard_negatives=3, false_negative_ratio=0.999)
    hard = mine_hard_negatives(emb, ids(q, "query"), ids(d, "document"), cfg)
    assert all(i not in negs and len(negs) <= 3 for i, negs in enumerate(hard))
    assert 5 not in hard[3] and 3 not in hard[5]
    assert sum(map(len, hard)) > 0


def test_train_layers_freezes_the_rest():
    q, d = pairs(16)
    emb = embedder()
    before = {n: p.detach().clone() for n, p in emb.model.named_parameters()}
    tune(emb, q, d, ContrastiveConfig(steps=2, batch_size=8, train_layers=1, hard_negatives=0),
         progress=False)
    changed = {n for n, p in emb.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("blocks.1.", "norm.")) for n in changed)
    assert all(p.requires_grad for p in emb.model.parameters())   # handed back trainable

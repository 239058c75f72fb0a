"""Ranking metrics: hand-computed cases, pessimistic ties, scikit-learn's NDCG, a brute-force
loop on random data, blocks, and the errors."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from seqlab.tasks import retrieval
from seqlab.tasks.retrieval import per_query_metrics, rank_metrics, ranks_of


def test_hand_computed_case():
    scores = np.array([[0.9, 0.1, 0.5, 0.3],    # relevant 0: rank 1
                       [0.9, 0.1, 0.5, 0.3],    # relevant 2: rank 2
                       [0.9, 0.1, 0.5, 0.3]])   # relevant 1: rank 4
    m = rank_metrics(scores, [0, 2, 1], ks=(1, 2))
    assert ranks_of(scores, [0, 2, 1]).tolist() == [1, 2, 4]
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert m["mean_rank"] == pytest.approx(7 / 3)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["ndcg"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 3)
    assert all(isinstance(v, float) for v in m.values())


def test_ties_rank_below_wrong_candidates():
    assert ranks_of(np.zeros((2, 5)), [0, 4]).tolist() == [5, 5]     # a constant scorer
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert ranks_of(scores, [1]).tolist() == [3]
    mask = torch.tensor([[False, True, True, False, False]])        # two relevant, tied with #3
    per = per_query_metrics(scores, mask, ks=(2,))
    # pessimistic order: 3, then 1 and 2 (relevant), then 0, 4
    assert per["rank"].tolist() == [2]
    assert per["recall@2"].tolist() == [0.5]
    ideal = 1 + 1 / math.log2(3)
    assert per["ndcg"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal)
    assert per["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / ideal)
    assert ranks_of([[-np.inf, -np.inf, 1.0]], [0]).tolist() == [3]


def test_index_and_one_hot_mask_agree():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (30, 12)).astype(np.float32)       # many ties
    rel = rng.integers(0, 12, 30)
    a = per_query_metrics(scores, rel, ks=(1, 3, 20))
    b = per_query_metrics(scores, np.eye(12, dtype=bool)[rel], ks=(1, 3, 20))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("k", [1, 3, 10, None], ids=lambda k: f"k{k}")
def test_ndcg_matches_sklearn_without_ties(k):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 25))                              # continuous: no ties
    mask = rng.random((40, 25)) < 0.15
    mask[np.arange(40), rng.integers(0, 25, 40)] = True              # every query has one
    m = rank_metrics(scores, mask, ks=(k,) if k else ())
    assert m[f"ndcg@{k}" if k else "ndcg"] == pytest.approx(ndcg_score(mask, scores, k=k))


def test_brute_force_loop_on_random_data():
    rng = np.random.default_rng(2)
    Q, C = 50, 40
    scores = rng.integers(0, 10, (Q, C)).astype(np.float64)       # ties on purpose
    rel = rng.integers(0, C, Q)
    ranks = []
    for q in range(Q):
        wrong_above = sum(scores[q, c] >= scores[q, rel[q]] for c in range(C) if c != rel[q])
        ranks.append(1 + wrong_above)
    ranks = np.array(ranks)
    m = rank_metrics(torch.from_numpy(scores), torch.from_numpy(rel), ks=(1, 5, 10))
    assert ranks_of(scores, rel).tolist() == ranks.tolist()
    assert m["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert m["mean_rank"] == pytest.approx(ranks.mean())
    for k in (1, 5, 10):
        assert m[f"recall@{k}"] == pytest.approx(np.mean(ranks <= k))


def test_brute_force_recall_with_several_relevant():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(20, 15))
    mask = rng.random((20, 15)) < 0.3
    mask[:, 0] = True
    m = rank_metrics(scores, mask, ks=(4,))
    want = [mask[q, np.argsort(-scores[q])[:4]].sum() / mask[q].sum() for q in range(20)]
    first = [1 + int(np.flatnonzero(mask[q, np.argsort(-scores[q])])[0]) for q in range(20)]
    assert m["recall@4"] == pytest.approx(np.mean(want))
    assert m["mrr"] == pytest.approx(np.mean(1 / np.array(first)))


def test_blocks_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 5, (23, 9)).astype(np.float32)
    mask = rng.random((23, 9)) < 0.3
    mask[:, 3] = True
    whole_i, whole_m = per_query_metrics(scores, np.arange(23) % 9), per_query_metrics(scores, mask)
    monkeypatch.setattr(retrieval, "BLOCK_ELEMENTS", 20)             # 2 rows per block
    for a, b in ((whole_i, per_query_metrics(scores, np.arange(23) % 9)),
                 (whole_m, per_query_metrics(scores, mask))):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_bad_inputs_are_named():
    s = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\(queries, candidates\) matrix.*got shape \(4,\)"):
        rank_metrics(np.zeros(4), [0])
    with pytest.raises(ValueError, match="relevant holds 2 candidate indices for 3 queries"):
        rank_metrics(s, [0, 1])
    with pytest.raises(ValueError, match=r"relevant\[1\] = 4 is not a candidate index in \[0, 4\)"):
        rank_metrics(s, [0, 4, 1])
    with pytest.raises(ValueError, match="integer candidate indices; got dtype torch.float64"):
        rank_metrics(s, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"matching scores \(3, 4\); got shape \(3, 5\)"):
        rank_metrics(s, np.ones((3, 5), bool))
    with pytest.raises(ValueError, match="query 1 has no relevant candidate"):
        rank_metrics(s, np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        rank_metrics(s, np.full((3, 4), 2))
    nan = s.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="scores of query 2 hold NaN; replace NaN by -inf"):
        rank_metrics(nan, [0, 0, 0])
    with pytest.raises(ValueError, match="positive ints; got 0"):
        rank_metrics(s, [0, 0, 0], ks=(1, 0))

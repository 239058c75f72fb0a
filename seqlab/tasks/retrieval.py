"""Ranking metrics for retrieval tasks: rank of the relevant candidate, MRR, recall@k, mean
rank and NDCG, from a score matrix.

``scores`` is a ``(Q, C)`` matrix (torch or numpy; higher = better) of every query against
every candidate. ``relevant`` names what each query should find: either one candidate index
per query, shape ``(Q,)``, or a boolean relevance matrix ``(Q, C)`` when a query has several
relevant candidates (relevance is binary).

Ties are counted pessimistically: a relevant candidate tied with a wrong one ranks *below*
it, so a model that gives every candidate the same score gets rank C, not 1 (and a constant
scorer cannot look good). Ties among relevant candidates do not matter (they are
interchangeable under binary relevance). scikit-learn's ``ndcg_score`` instead averages over
the orders of tied items; the two agree when there are no ties.

Definitions (averaged over queries): ``rank`` is the 1-based rank of the best-ranked
relevant candidate; ``mrr`` the mean of 1 / rank; ``recall@k`` the share of a query's
relevant candidates in its top k (with one relevant candidate: whether it is in the top k);
``ndcg@k`` and ``ndcg`` DCG with gain 1 and discount 1 / log2(position + 1), over the top k
or the whole list, divided by the DCG of the ideal order.

Work is vectorised over queries and done in blocks of rows of at most ``BLOCK_ELEMENTS``
scores, so a large pool (C in the hundreds of thousands) never needs more than one block
of temporaries; the matrix itself is read in place.

Example:
    >>> scores = query_emb @ cand_emb.T                     # (Q, C); query i matches cand i
    >>> rank_metrics(scores, torch.arange(len(scores)), ks=(1, 10))
    {'mrr': 0.41, 'mean_rank': 12.3, 'recall@1': 0.3, 'recall@10': 0.62,
     'ndcg@1': 0.3, 'ndcg@10': 0.45, 'ndcg': 0.52}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# Rows per block = BLOCK_ELEMENTS // C. The boolean-relevance path keeps about 30 bytes of
# temporaries per score (two int64 orders, a gathered copy), so 2^22 scores is ~128 MB.
BLOCK_ELEMENTS = 1 << 22


def ranks_of(scores, relevant) -> np.ndarray:
    """The 1-based rank of each query's best-ranked relevant candidate, ties pessimistic.

    Args:
        scores: ``(Q, C)`` torch tensor or numpy array, higher = better; no NaN.
        relevant: ``(Q,)`` integer index of the relevant candidate per query, or a ``(Q, C)``
            boolean (or 0/1) relevance matrix with at least one relevant candidate per row.

    Returns:
        ``(Q,)`` int64 numpy array with values in ``1 ... C``.

    Raises:
        ValueError: shapes that do not match, an index out of range, NaN scores, or a query
            with no relevant candidate.

    Example:
        >>> ranks_of(np.array([[0.1, 0.9, 0.5], [0.2, 0.2, 0.1]]), [2, 0])
        array([2, 2])          # query 1's candidate 0 ties with candidate 1 and ranks below it
    """
    return per_query_metrics(scores, relevant, ks=())["rank"].astype(np.int64)


def rank_metrics(scores, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean retrieval metrics over queries: ``mrr``, ``mean_rank``, ``recall@k`` and ``ndcg@k``
    for each k in ``ks``, and the full-list ``ndcg``.

    Args:
        scores: ``(Q, C)`` torch tensor or numpy array, higher = better; no NaN.
        relevant: ``(Q,)`` candidate index per query, or a ``(Q, C)`` boolean relevance matrix.
        ks: cut-offs for recall and NDCG (positive ints; k >= C counts the whole list).

    Returns:
        A dict of Python floats (see the module docstring for the definitions).

    Raises:
        ValueError: as for :func:`ranks_of`, or a cut-off that is not a positive int.

    Example:
        >>> rank_metrics(np.eye(3), [0, 1, 2], ks=(1,))["mrr"]
        1.0
    """
    per = per_query_metrics(scores, relevant, ks)
    out = {"mrr": float(np.mean(1.0 / per["rank"])), "mean_rank": float(np.mean(per["rank"]))}
    out.update({name: float(np.mean(v)) for name, v in per.items() if name != "rank"})
    return out


def per_query_metrics(scores, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Per-query ``rank``, ``recall@k``, ``ndcg@k`` and ``ndcg`` as ``(Q,)`` float64 arrays
    (for confidence intervals or paired tests between two systems); :func:`rank_metrics` is
    their mean. Arguments and errors as for :func:`rank_metrics`."""
    s, rel_index, rel_mask = _check(scores, relevant)
    ks = _check_ks(ks)
    Q, C = s.shape
    rows = max(1, BLOCK_ELEMENTS // C)
    # discount[p] = 1 / log2(p + 2) for 0-based position p; ideal[n - 1] = DCG of n hits on top.
    discount = 1.0 / torch.log2(torch.arange(2, C + 2, dtype=torch.float64, device=s.device))
    ideal = discount.cumsum(0)
    names = ["rank"] + [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["ndcg"]
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    for start in range(0, Q, rows):
        block = slice(start, start + rows)
        if s.is_floating_point():     # checked per block: a (Q, C) mask could be gigabytes
            nan_rows = torch.isnan(s[block]).any(1).nonzero()
            if len(nan_rows):
                raise ValueError(f"scores of query {start + int(nan_rows[0])} hold NaN; replace "
                                 "NaN by -inf to rank those candidates last")
        if rel_index is not None:
            out = _one_relevant(s[block], rel_index[block], ks, discount)
        else:
            out = _several_relevant(s[block], rel_mask[block], ks, discount, ideal)
        for n in names:
            parts[n].append(out[n].double().cpu())
    return {n: torch.cat(parts[n]).numpy() for n in names}


def _one_relevant(s: Tensor, rel: Tensor, ks: tuple[int, ...], discount: Tensor) -> dict:
    # Counting beats sorting here: O(C) per query. ">=" counts the relevant candidate itself
    # and every candidate tied with it, which is the pessimistic rank.
    rank = (s >= s.gather(1, rel[:, None])).sum(1)                    # (q,)
    gain = discount[rank - 1]                                          # ideal DCG is 1
    out = {"rank": rank, "ndcg": gain}
    for k in ks:
        out[f"recall@{k}"] = (rank <= k).double()
        out[f"ndcg@{k}"] = torch.where(rank <= k, gain, 0.0)
    return out


def _several_relevant(s: Tensor, rel: Tensor, ks: tuple[int, ...], discount: Tensor,
                      ideal: Tensor) -> dict:
    # Two stable sorts: first put non-relevant candidates before relevant ones, then sort by
    # score; ties keep the first order, so a relevant candidate lands after a tied wrong one.
    first = torch.argsort(rel.to(torch.uint8), dim=1, stable=True)               # (q, C)
    by_score = torch.sort(s.gather(1, first), dim=1, descending=True, stable=True).indices
    hits = rel.gather(1, first.gather(1, by_score)).double()       # (q, C) relevance, ranked
    n_rel = hits.sum(1).long()                                                    # (q,)
    out = {"rank": hits.argmax(1) + 1,                            # the first hit's position
           "ndcg": (hits * discount).sum(1) / ideal[n_rel - 1]}
    for k in ks:
        top = hits[:, :k]
        out[f"recall@{k}"] = top.sum(1) / n_rel
        out[f"ndcg@{k}"] = (top * discount[:k]).sum(1) / ideal[n_rel.clamp(max=k) - 1]
    return out


def _check(scores, relevant) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Validated (scores, relevant index (Q,) or None, relevance mask (Q, C) or None)."""
    s = torch.as_tensor(scores)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be a (queries, candidates) matrix with at least one of "
                         f"each; got shape {tuple(s.shape)}")
    if s.dtype == torch.bool or s.is_complex():
        raise ValueError(f"scores must be real numbers (higher = better); got dtype {s.dtype}")
    Q, C = s.shape
    r = torch.as_tensor(np.asarray(relevant.cpu() if isinstance(relevant, Tensor) else relevant))
    r = r.to(s.device)
    if r.ndim == 1:
        if r.shape[0] != Q:
            raise ValueError(f"relevant holds {r.shape[0]} candidate indices for {Q} queries; "
                             "give one index per query (or a (Q, C) relevance matrix)")
        if r.dtype == torch.bool or r.is_floating_point() or r.is_complex():
            raise ValueError(f"a 1-D relevant must hold integer candidate indices; got dtype "
                             f"{r.dtype} (a boolean relevance matrix must be (Q, C))")
        bad = ((r < 0) | (r >= C)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"relevant[{i}] = {int(r[i])} is not a candidate index in "
                             f"[0, {C}) for scores of shape {(Q, C)}")
        return s, r.long(), None
    if r.ndim != 2 or tuple(r.shape) != (Q, C):
        raise ValueError(f"relevant must be (Q,) candidate indices or a (Q, C) relevance matrix "
                         f"matching scores {(Q, C)}; got shape {tuple(r.shape)}")
    if r.dtype != torch.bool:
        if ((r != 0) & (r != 1)).any():
            raise ValueError("a relevance matrix must be boolean or 0/1 (binary relevance); "
                             "threshold graded relevance first, e.g. relevant = grades > 0")
        r = r != 0
    empty = (~r.any(1)).nonzero()
    if len(empty):
        raise ValueError(f"query {int(empty[0])} has no relevant candidate, so it has no rank; "
                         f"drop such queries first ({len(empty)} of {Q} have none)")
    return s, None, r


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(ks)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"cut-offs ks must be positive ints; got {k!r} in {list(out)}")
    return tuple(dict.fromkeys(int(k) for k in out))     # de-duplicated, order kept

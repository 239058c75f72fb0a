"""Beam search and diverse beam search, for any seqlab model.

Both run on the engine's state contract: the prompts are prefilled once
(``engine.prefill``), the joined state is expanded to ``rows * num_beams`` with
``state.select`` and, after each step, beams are reordered (and finished rows
pruned) with ``LMState.select`` -- the same call for KV caches and recurrent
states.

Scores follow Hugging Face: a hypothesis of ``n`` new tokens (an end token
included) scores ``sum(logprob) / n ** length_penalty``. A hypothesis ends at
``eos_id`` or at a stop sequence and goes to a per-row pool; a row ends once
its pool holds ``num_beams`` hypotheses that no live beam can still beat, or
after ``max_new_tokens`` (then the live beams join the pool).

Diverse beam search (Vijayakumar et al. 2016, arXiv:1610.02424) splits the
beams into ``num_groups`` groups searched in turn at each step; group ``g``'s
log-probabilities are lowered by ``diversity_penalty`` times the number of
times each token was already chosen at this step by groups ``< g`` (Hamming
diversity). Selection within a group uses these penalized scores; the
returned best sequence and the n-best order use the model's own
(length-penalized) log-probabilities.

Beam search is deterministic: the sampling settings and the generator are
ignored. ``on_token`` is called with the best sequence's tokens once a row's
search is over (beam search cannot stream before then).

Example:
    >>> out = seqlab.decoding.generate(model, [[1, 2, 3]], "beam", 16, num_beams=4,
    ...                                num_return_sequences=2)
    >>> out.tokens[0], out.stats["nbest"][0]          # best; [{"tokens", "score"}, ...]
"""

from __future__ import annotations

import math

import torch

from seqlab.config import ConfigError
from seqlab.decoding.engine import GenerateOutput, prefill, timer
from seqlab.decoding.strategies import register

_NEG = float("-inf")


def _norm(total: float, length: int, length_penalty: float) -> float:
    return total / (max(length, 1) ** length_penalty)


def _search(model, rows, *, max_new_tokens, stopper, on_token, num_beams, num_groups,
            diversity_penalty, length_penalty, name):
    """The shared core; returns (best per row, all final hypotheses per row, stats)."""
    device = next(model.parameters()).device
    elapsed = timer()
    B, G = len(rows), num_groups
    K = num_beams // G  # beams per group
    if max_new_tokens == 0:
        return [[] for _ in rows], [[{"tokens": [], "score": 0.0, "group": 0}] for _ in rows], {
            "strategy": name, "target_calls": 0, "new_tokens": 0, "tokens_per_call": 0.0,
            "prefill_s": 0.0, "wall_s": elapsed(), "tokens_per_s": 0.0}
    logits, state, calls = prefill(model, rows, device)
    prefill_s = elapsed()
    expand = torch.arange(B, device=device).repeat_interleave(G * K)
    logits, state = logits.index_select(0, expand), state.select(expand)
    eos, stops = stopper.eos_id, stopper.stop

    def ends(seq):
        return (eos is not None and seq[-1] == eos) or any(seq[-len(s):] == s for s in stops)

    # per row, per group, per beam: tokens, selection score (penalized sum), true logprob sum
    hyps = [[[[] for _ in range(K)] for _ in range(G)] for _ in range(B)]
    sel = [[[0.0] + [_NEG] * (K - 1) for _ in range(G)] for _ in range(B)]
    true = [[[0.0] + [_NEG] * (K - 1) for _ in range(G)] for _ in range(B)]
    # pools: (selection score normalized, true score normalized, tokens), best first, <= K each
    pools = [[[] for _ in range(G)] for _ in range(B)]
    group_done = [[False] * G for _ in range(B)]
    active = list(range(B))  # rows still searched, in state order

    for step in range(max_new_tokens):
        cur_len = step + 1
        logp = logits if logits.dtype == torch.float64 else logits.float()
        logp = torch.log_softmax(logp, -1)
        V = logp.shape[-1]
        logp = logp.view(len(active), G, K, V)
        counts = torch.zeros(len(active), V, dtype=logp.dtype, device=logp.device)
        src = [[0] * (G * K) for _ in active]  # beam (in this row's block) each new beam comes from
        nxt = [[0] * (G * K) for _ in active]
        for g in range(G):
            lp = logp[:, g]
            pen = lp - diversity_penalty * counts[:, None, :] if diversity_penalty and g else lp
            base = torch.tensor([sel[b][g] for b in active], dtype=lp.dtype, device=lp.device)
            cand = (base[:, :, None] + pen).view(len(active), K * V)
            vals, idx = cand.topk(min(2 * K, K * V), dim=-1)
            lp_cpu = lp.cpu()
            for a, (vs, ids) in enumerate(zip(vals.tolist(), idx.tolist())):
                b = active[a]
                if group_done[b][g]:  # keep the finished group's beams as they are (ignored)
                    for j in range(K):
                        src[a][g * K + j], nxt[a][g * K + j] = g * K + j, 0
                    continue
                new_h, new_s, new_t = [], [], []
                for rank, (v, i) in enumerate(zip(vs, ids)):
                    j, tok = divmod(i, V)
                    seq = hyps[b][g][j] + [tok]
                    t = true[b][g][j] + lp_cpu[a, j, tok].item()
                    if ends(seq):
                        if rank < K and v > _NEG:
                            pools[b][g].append((_norm(v, cur_len, length_penalty),
                                                _norm(t, cur_len, length_penalty), seq))
                            pools[b][g].sort(key=lambda h: -h[0])
                            del pools[b][g][K:]
                        continue
                    src[a][g * K + len(new_h)] = g * K + j
                    nxt[a][g * K + len(new_h)] = tok
                    new_h.append(seq), new_s.append(v), new_t.append(t)
                    if len(new_h) == K:
                        break
                while len(new_h) < K:  # every candidate ended: pad with dead beams
                    src[a][g * K + len(new_h)] = g * K
                    new_h.append(hyps[b][g][0] + [0]), new_s.append(_NEG), new_t.append(_NEG)
                hyps[b][g], sel[b][g], true[b][g] = new_h, new_s, new_t
                for j in range(K):
                    if new_s[j] > _NEG:
                        counts[a, nxt[a][g * K + j]] += 1
                # done: the pool is full and no live beam can still beat its worst
                pool = pools[b][g]
                if len(pool) == K:
                    best = max(new_s)
                    if length_penalty > 0:
                        bound = _norm(best, max_new_tokens, length_penalty)
                    else:
                        bound = _norm(best, cur_len, length_penalty)
                    if bound <= pool[-1][0]:
                        group_done[b][g] = True
        last = step == max_new_tokens - 1
        for a, b in enumerate(active):  # the last step, or rows whose groups all ended
            if last:
                for g in range(G):
                    if not group_done[b][g]:
                        for h, s, t in zip(hyps[b][g], sel[b][g], true[b][g]):
                            if s > _NEG:
                                pools[b][g].append((_norm(s, cur_len, length_penalty),
                                                    _norm(t, cur_len, length_penalty), h))
                        pools[b][g].sort(key=lambda h: -h[0])
                        del pools[b][g][K:]
                        group_done[b][g] = True
        if last:
            break
        keep = [a for a, b in enumerate(active) if not all(group_done[b])]
        if not keep:
            break
        index = [a * G * K + s for a in keep for s in src[a]]
        tokens = [t for a in keep for t in nxt[a]]
        active = [active[a] for a in keep]
        index_t = torch.tensor(index, dtype=torch.long, device=device)
        state = state.select(index_t)
        logits, state = model.step(torch.tensor(tokens, dtype=torch.long, device=device), state)
        calls += 1

    best, allh = [], []
    for b in range(B):
        hs = [{"tokens": h, "score": t, "group": g}
              for g in range(G) for (_, t, h) in pools[b][g]]
        hs.sort(key=lambda e: -e["score"])  # stable: ties keep group order
        if not hs:  # nothing finite survived (cannot happen with a finite model)
            hs = [{"tokens": [], "score": _NEG, "group": 0}]
        allh.append(hs)
        best.append(list(hs[0]["tokens"]))
        stopper.done[b] = True
        if on_token is not None:
            for t in best[-1]:
                on_token(b, t)
    new = sum(len(o) for o in best)
    wall = elapsed()
    return best, allh, {"strategy": name, "target_calls": calls, "new_tokens": new,
                        "tokens_per_call": new / max(calls, 1), "prefill_s": prefill_s,
                        "wall_s": wall, "tokens_per_s": new / max(wall, 1e-9)}


def _check(num_beams, num_groups, diversity_penalty, length_penalty):
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams = {num_beams!r} is not allowed: expected an int >= 1")
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ConfigError(f"num_groups = {num_groups!r} is not allowed: expected an int >= 1")
    if num_beams % num_groups:
        raise ConfigError(f"num_beams = {num_beams} is not divisible by num_groups = {num_groups}; "
                          f"choose num_beams as a multiple of {num_groups}")
    if not diversity_penalty >= 0:
        raise ConfigError(f"diversity_penalty = {diversity_penalty!r} is not allowed: expected >= 0")
    if not math.isfinite(length_penalty):
        raise ConfigError(f"length_penalty = {length_penalty!r} is not allowed: expected a finite number")


@register("beam")
@torch.no_grad()
def beam(model, rows, *, max_new_tokens, sampling=None, stopper, on_token=None, generator=None,
         num_beams: int = 4, length_penalty: float = 1.0,
         num_return_sequences: int = 1) -> GenerateOutput:
    """Beam search; ``stats["nbest"]`` (when ``num_return_sequences > 1``) holds per row the
    best ``num_return_sequences`` hypotheses as ``{"tokens", "score"}``, best first."""
    _check(num_beams, 1, 0.0, length_penalty)
    if not isinstance(num_return_sequences, int) or not 1 <= num_return_sequences <= num_beams:
        raise ConfigError(f"num_return_sequences = {num_return_sequences!r} is not allowed: expected "
                          f"an int from 1 to num_beams = {num_beams}")
    best, allh, stats = _search(model, rows, max_new_tokens=max_new_tokens, stopper=stopper,
                                on_token=on_token, num_beams=num_beams, num_groups=1,
                                diversity_penalty=0.0, length_penalty=float(length_penalty),
                                name="beam")
    if num_return_sequences > 1:
        stats["nbest"] = [[{"tokens": h["tokens"], "score": h["score"]}
                           for h in hs[:num_return_sequences]] for hs in allh]
    stats["scores"] = [hs[0]["score"] for hs in allh]
    return GenerateOutput(best, stats)


@register("diverse-beam")
@torch.no_grad()
def diverse_beam(model, rows, *, max_new_tokens, sampling=None, stopper, on_token=None,
                 generator=None, num_beams: int = 4, num_groups: int = 2,
                 diversity_penalty: float = 0.5, length_penalty: float = 1.0) -> GenerateOutput:
    """Diverse beam search; ``stats["nbest"]`` holds per row every group's final beams as
    ``{"tokens", "score", "group"}``, best (model score) first."""
    _check(num_beams, num_groups, diversity_penalty, length_penalty)
    best, allh, stats = _search(model, rows, max_new_tokens=max_new_tokens, stopper=stopper,
                                on_token=on_token, num_beams=num_beams, num_groups=num_groups,
                                diversity_penalty=float(diversity_penalty),
                                length_penalty=float(length_penalty), name="diverse-beam")
    stats["nbest"] = allh
    stats["scores"] = [hs[0]["score"] for hs in allh]
    return GenerateOutput(best, stats)

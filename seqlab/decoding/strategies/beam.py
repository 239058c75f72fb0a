"""Beam search and diverse beam search, for any seqlab model.

Both run on the engine's state contract: the prompts are prefilled once
(``engine.prefill``), the joined state is expanded to ``rows * num_beams`` with
``state.select`` and, after each step, beams are reordered (and finished rows
pruned) with the state's ``select`` -- the same call for KV caches and recurrent
states. Candidates are picked with tensor operations per group; the host reads one
small tensor per step (which rows have finished).

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
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.config import Config, ConfigError, option, require
from seqlab.decoding.engine import DecodeStats, GenerateOutput, Request, prefill, timer
from seqlab.decoding.strategies import register

_NEG = float("-inf")


@dataclass(frozen=True)
class _BeamOptions(Config):
    num_beams: int = option(4, "beam, diverse-beam: beams per prompt")
    length_penalty: float = option(1.0, "beam, diverse-beam: a hypothesis scores "
                                        "sum(logprob) / length**this")

    def validate(self) -> None:
        require(self.num_beams >= 1, self, "num_beams", "an int >= 1")
        require(math.isfinite(self.length_penalty), self, "length_penalty", "a finite number")


@dataclass(frozen=True)
class BeamConfig(_BeamOptions):
    num_return_sequences: int = option(1, "beam: hypotheses per prompt in stats.nbest")

    def validate(self) -> None:
        super().validate()
        require(1 <= self.num_return_sequences <= self.num_beams, self, "num_return_sequences",
                f"an int from 1 to num_beams = {self.num_beams}")


@dataclass(frozen=True)
class DiverseBeamConfig(_BeamOptions):
    num_groups: int = option(2, "diverse-beam: groups")
    diversity_penalty: float = option(0.5, "diverse-beam: Hamming diversity penalty (lambda)")

    def validate(self) -> None:
        super().validate()
        require(self.num_groups >= 1, self, "num_groups", "an int >= 1")
        if self.num_beams % self.num_groups:
            raise ConfigError(f"num_beams = {self.num_beams} is not divisible by num_groups = "
                              f"{self.num_groups}; choose num_beams as a multiple of "
                              f"{self.num_groups}")
        require(self.diversity_penalty >= 0, self, "diversity_penalty", "a number >= 0")


@dataclass
class _Beams:
    """The search's tensors for the A rows still searched, G groups of K beams each.

    tokens: (A, G, K, t) each live beam's tokens; sel: (A, G, K) its selection score
    (diversity-penalized log-probability), true: its model log-probability (-inf: dead);
    pool_*: the finished hypotheses per group, best selection score first (at most K;
    -inf: empty), their tokens padded to the budget and lengths; done: (A, G) groups over.
    """

    tokens: Tensor
    sel: Tensor
    true: Tensor
    pool_sel: Tensor
    pool_true: Tensor
    pool_tokens: Tensor
    pool_len: Tensor
    done: Tensor

    def select_rows(self, rows: Tensor) -> "_Beams":
        return _Beams(*(t.index_select(0, rows) for t in (
            self.tokens, self.sel, self.true, self.pool_sel, self.pool_true, self.pool_tokens,
            self.pool_len, self.done)))


class _Search:
    def __init__(self, req: Request, num_beams: int, num_groups: int, diversity_penalty: float,
                 length_penalty: float):
        self.req, self.G, self.K = req, num_groups, num_beams // num_groups
        self.penalty, self.lp = diversity_penalty, length_penalty
        self.T = req.max_new_tokens
        self.eos, self.stops = req.stopper.eos_id, req.stopper.stop

    def norm(self, score: Tensor, length) -> Tensor:
        return score / (max(length, 1) ** self.lp)

    def ends(self, prev: Tensor, tok: Tensor) -> Tensor:
        """Whether appending ``tok (A, N)`` to ``prev (A, N, t)`` ends a hypothesis."""
        out = torch.zeros_like(tok, dtype=torch.bool)
        if self.eos is not None:
            out |= tok == self.eos
        for s in self.stops:
            m = len(s)
            if prev.shape[-1] + 1 < m:
                continue
            want = torch.tensor(s, device=tok.device)
            tail = torch.cat([prev[..., prev.shape[-1] - (m - 1):], tok[..., None]], -1)
            out |= (tail == want).all(-1)
        return out

    def start(self, A: int, device) -> _Beams:
        G, K, T = self.G, self.K, self.T
        sel = torch.full((A, G, K), _NEG, dtype=torch.float64, device=device)
        sel[:, :, 0] = 0.0
        return _Beams(torch.zeros(A, G, K, 0, dtype=torch.long, device=device), sel, sel.clone(),
                      torch.full((A, G, K), _NEG, dtype=torch.float64, device=device),
                      torch.full((A, G, K), _NEG, dtype=torch.float64, device=device),
                      torch.zeros(A, G, K, T, dtype=torch.long, device=device),
                      torch.zeros(A, G, K, dtype=torch.long, device=device),
                      torch.zeros(A, G, dtype=torch.bool, device=device))

    def add_to_pool(self, bs: _Beams, sel: Tensor, true: Tensor, seqs: Tensor, ok: Tensor) -> None:
        """Merge hypotheses (A, G, N) that ``ok`` marks into their group's pool, keeping the K
        best (a stable sort: ties keep the pool's older entries first, then rank order)."""
        t = seqs.shape[-1]
        cand_sel = torch.cat([bs.pool_sel, sel.masked_fill(~ok, _NEG)], 2)
        cand_true = torch.cat([bs.pool_true, true], 2)
        padded = torch.nn.functional.pad(seqs, (0, self.T - t))
        cand_tok = torch.cat([bs.pool_tokens, padded], 2)
        cand_len = torch.cat([bs.pool_len, torch.full_like(sel, t, dtype=torch.long)], 2)
        order = cand_sel.sort(dim=2, descending=True, stable=True).indices[..., :self.K]
        bs.pool_sel = cand_sel.gather(2, order)
        bs.pool_true = cand_true.gather(2, order)
        bs.pool_len = cand_len.gather(2, order)
        bs.pool_tokens = cand_tok.gather(2, order[..., None].expand(-1, -1, -1, self.T))

    def step(self, bs: _Beams, logp: Tensor, cur_len: int) -> tuple[_Beams, Tensor, Tensor]:
        """One step for every group in turn. ``logp (A, G, K, V)``; returns the new beams,
        each new beam's source beam (A, G*K) within its row's block and its token (A, G*K).

        When none of a group's K best candidates ends a hypothesis (most steps), they are
        the new beams as they stand. Ending candidates need the general selection; without an
        end token or stop sequence none can end, and on the CPU, where reading a flag costs
        no device sync, a step checks whether any did (per-step overhead is what a CPU
        beam search pays for; on a GPU the general selection runs sync-free).
        """
        A, G, K, V = logp.shape
        device = logp.device
        can_end = self.eos is not None or bool(self.stops)
        check = device.type == "cpu"
        counts = torch.zeros(A, V, dtype=logp.dtype, device=device) if self.penalty else None
        n_cand = min(2 * K, K * V) if can_end else K
        rank = torch.arange(n_cand, device=device)
        same = torch.arange(K, device=device).expand(A, K)
        live_groups = ~bs.done
        srcs, nxts, new_tokens, new_sel, new_true = [], [], [], [], []
        pooled = []   # (group, selection score, true score, sequences, which end) per group
        for g in range(G):
            lp = logp[:, g]
            pen = lp - self.penalty * counts[:, None, :] if counts is not None and g else lp
            vals, idx = (bs.sel[:, g, :, None] + pen).view(A, K * V).topk(n_cand, dim=-1)
            beam, tok = idx // V, idx % V
            true = bs.true[:, g].gather(1, beam) + lp.reshape(A, K * V).gather(1, idx)
            prev = bs.tokens[:, g].gather(1, beam[..., None].expand(-1, -1, bs.tokens.shape[-1]))
            seqs = torch.cat([prev, tok[..., None]], -1)
            live_group = live_groups[:, g, None]
            ends = self.ends(prev, tok) if can_end else None
            if ends is None or (check and not bool(ends[:, :K].any())):
                # the K best go on as they are
                pick_vals, pick_true, pick_beam, pick_tok = vals[:, :K], true[:, :K], beam[:, :K], tok[:, :K]
                g_seq = seqs[:, :K]
                valid = live_group
            else:
                # hypotheses that end go to the pool (merged for all groups after the loop)
                pooled.append((g, vals, true, seqs, ends & (vals > _NEG) & (rank < K) & live_group))
                # the first K candidates that do not end become the beams (dead ones pad)
                live = ~ends
                chosen = live & (live.long().cumsum(1) <= K)
                pick = torch.where(chosen, rank, rank + n_cand).sort(dim=1).indices[:, :K]
                valid = chosen.gather(1, pick) & live_group
                pick_vals, pick_true = vals.gather(1, pick), true.gather(1, pick)
                pick_beam, pick_tok = beam.gather(1, pick), tok.gather(1, pick)
                g_seq = seqs.gather(1, pick[..., None].expand(-1, -1, seqs.shape[-1]))
            # a finished group keeps its beams as they are (they are ignored)
            g_sel = torch.where(valid, pick_vals, torch.where(live_group, _NEG, bs.sel[:, g]))
            g_true = torch.where(valid, pick_true, torch.where(live_group, _NEG, bs.true[:, g]))
            g_beam = torch.where(valid, pick_beam, torch.where(live_group, 0, same))
            g_tok = torch.where(valid, pick_tok, 0)
            if counts is not None:
                counts.scatter_add_(1, g_tok, (g_sel > _NEG).to(counts.dtype) * live_group)
            srcs.append(g * K + g_beam)
            nxts.append(g_tok)
            new_tokens.append(g_seq)
            new_sel.append(g_sel)
            new_true.append(g_true)
        bs.tokens = torch.stack(new_tokens, 1)
        bs.sel, bs.true = torch.stack(new_sel, 1), torch.stack(new_true, 1)
        if pooled:
            sel = torch.full((A, G, n_cand), _NEG, dtype=logp.dtype, device=device)
            tru = torch.full((A, G, n_cand), _NEG, dtype=logp.dtype, device=device)
            seq = torch.zeros(A, G, n_cand, cur_len, dtype=torch.long, device=device)
            ok = torch.zeros(A, G, n_cand, dtype=torch.bool, device=device)
            for g, v, t, q, o in pooled:
                sel[:, g], tru[:, g], seq[:, g], ok[:, g] = v, t, q, o
            self.add_to_pool(bs, self.norm(sel, cur_len), self.norm(tru, cur_len), seq, ok)
        # done: the pool is full and no live beam can still beat its worst entry
        if can_end:
            bound = self.norm(bs.sel.max(2).values, self.T if self.lp > 0 else cur_len)
            full = (bs.pool_sel > _NEG).all(2)
            bs.done |= full & (bound <= bs.pool_sel[..., -1])
        return bs, torch.cat(srcs, 1), torch.cat(nxts, 1)

    def close(self, bs: _Beams, cur_len: int) -> None:
        """The budget is spent: every live beam of an unfinished group joins its pool."""
        ok = (bs.sel > _NEG) & ~bs.done[..., None]
        self.add_to_pool(bs, self.norm(bs.sel, cur_len), self.norm(bs.true, cur_len), bs.tokens, ok)
        bs.done[:] = True


@torch.no_grad()
def _search(model, req: Request, num_beams: int, num_groups: int, diversity_penalty: float,
            length_penalty: float, stats: DecodeStats) -> list[list[dict]]:
    """The shared core; returns per row every final hypothesis, best first."""
    elapsed = timer()
    B = len(req.rows)
    if req.max_new_tokens == 0:
        return [[{"tokens": [], "score": 0.0, "group": 0}] for _ in req.rows]
    search = _Search(req, num_beams, num_groups, diversity_penalty, length_penalty)
    G, K = search.G, search.K
    logits, state, stats.target_calls = prefill(model, req.rows, req.cached)
    stats.prefill_s = elapsed()
    device = logits.device
    expand = torch.arange(B, device=device).repeat_interleave(G * K)
    logits, state = logits.index_select(0, expand), state.select(expand)
    bs = search.start(B, device)
    final: list[_Beams | None] = [None] * B
    active = torch.arange(B, device=device)  # original row of each searched row

    for step in range(req.max_new_tokens):
        logp = logits if logits.dtype == torch.float64 else logits.float()
        logp = torch.log_softmax(logp, -1).double().view(active.numel(), G, K, -1)
        bs, src, nxt = search.step(bs, logp, step + 1)
        if step == req.max_new_tokens - 1:
            search.close(bs, step + 1)
        ended = bs.done.all(1)
        ended_l = ended.tolist()  # the step's one host sync: which rows are over
        if any(ended_l):
            for a, b in enumerate(active.tolist()):
                if ended_l[a]:
                    final[b] = bs.select_rows(torch.tensor([a], device=device))
            if all(ended_l):
                break
            keep = (~ended).nonzero().squeeze(1)
            bs, active = bs.select_rows(keep), active[keep]
            src, nxt = src[keep], nxt[keep]
        index = (torch.arange(active.numel(), device=device)[:, None] * (G * K) + src).flatten()
        state = state.select(index)
        logits, state = model.step(nxt.flatten(), state)
        stats.target_calls += 1

    out = []
    for b in range(B):
        f = final[b]
        hs = []
        for g in range(G):
            ok, lens = (f.pool_sel[0, g] > _NEG).tolist(), f.pool_len[0, g].tolist()
            toks, scores = f.pool_tokens[0, g].tolist(), f.pool_true[0, g].tolist()
            hs += [{"tokens": toks[j][:lens[j]], "score": scores[j], "group": g}
                   for j in range(K) if ok[j]]
        hs.sort(key=lambda e: -e["score"])  # stable: ties keep group order
        out.append(hs or [{"tokens": [], "score": _NEG, "group": 0}])
    return out


def _finish(req: Request, allh: list[list[dict]], stats: DecodeStats,
            elapsed) -> GenerateOutput:
    best = [list(hs[0]["tokens"]) for hs in allh]
    for b, toks in enumerate(best):
        req.stopper.done[b] = True
        if req.on_token is not None:
            for t in toks:
                req.on_token(b, t)
    stats.scores = [hs[0]["score"] for hs in allh]
    stats.new_tokens = sum(len(o) for o in best)
    stats.wall_s = elapsed()
    return GenerateOutput(best, stats)


@register("beam", BeamConfig, samples="never", streams=False)
def beam(model, req: Request, cfg: BeamConfig) -> GenerateOutput:
    """Beam search; ``stats.nbest`` (when ``num_return_sequences > 1``) holds per row the
    best ``num_return_sequences`` hypotheses as ``{"tokens", "score"}``, best first."""
    elapsed = timer()
    stats = DecodeStats(strategy="beam", options=cfg.to_dict())
    allh = _search(model, req, cfg.num_beams, 1, 0.0, cfg.length_penalty, stats)
    if cfg.num_return_sequences > 1:
        stats.nbest = [[{"tokens": h["tokens"], "score": h["score"]}
                        for h in hs[:cfg.num_return_sequences]] for hs in allh]
    return _finish(req, allh, stats, elapsed)


@register("diverse-beam", DiverseBeamConfig, samples="never", streams=False)
def diverse_beam(model, req: Request, cfg: DiverseBeamConfig) -> GenerateOutput:
    """Diverse beam search; ``stats.nbest`` holds per row every group's final beams as
    ``{"tokens", "score", "group"}``, best (model score) first."""
    elapsed = timer()
    stats = DecodeStats(strategy="diverse-beam", options=cfg.to_dict())
    allh = _search(model, req, cfg.num_beams, cfg.num_groups, cfg.diversity_penalty,
                   cfg.length_penalty, stats)
    stats.nbest = allh
    return _finish(req, allh, stats, elapsed)

"""Tree speculative decoding and Recursive Speculative Decoding (Jeon et al. 2024).

Each round the draft grows a tree of continuations instead of one chain, and
the target checks every branch in a single call. Two ways to grow the tree:

* ``branching=(b1, b2, ...)``: every node at depth d gets ``b_d`` children drawn
  *without replacement* from the draft's distribution (Gumbel-top-k), the
  fixed-shape tree of RSD-C;
* ``beam_width=W, depth=D``: stochastic beam search (Kool et al. 2019) keeps the W
  best continuations per depth under conditioned Gumbel perturbations, the
  tree of RSD-S; nodes may end early when none of their children survive.

With greedy decoding the children are the draft's top-k (or its deterministic
beam) and a node is accepted when it is the target's argmax, so the output is
exactly plain greedy decoding. With sampling, the siblings of a node are
checked in the order they were drawn by recursive rejection sampling: accept
sibling x with probability min(1, p(x)/q(x)); on rejection replace p by
normalize(max(0, p - q)) and q by q with x removed and renormalised, and go on;
if every sibling is rejected, draw the next token from what is left of p.
Because siblings are a sample without replacement from q, the accepted token
has exactly the target's distribution, so sampling is lossless.

Verification is one target call either way. An attention-only target scores the
whole tree as one row with tree attention (each node sees the cache, its
ancestors and itself; SpecInfer, Miao et al. 2024), then its cache keeps only the
accepted path. Any other target (recurrent, hybrid) gets the branches laid out as
batch rows, one per leaf, its state copied per row with ``select`` and rolled back
exactly as in chain speculative decoding.

The verification lives in ``TreeVerifier``: it takes a round's trees of tokens from any
proposer (a draft model here, a trained drafter in ``hidden``, the n-gram table in
``ngram_tree``). A proposer whose children are deterministic (point masses, no ``qs``)
is accepted by drawing the target's token at each node and following the child equal to
it, stopping with the drawn token where none is: plain sampling, so exact as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqlab.config import Config, ConfigError, option
from seqlab.decoding.engine import (TREES_KEPT, DecodeStats, GenerateOutput, Request, combine, groups,
                                    prefill)
from seqlab.decoding.loop import Verdict, draft_and_verify
from seqlab.decoding.sampling import SamplingConfig, choose, probabilities
from seqlab.decoding.strategies import register
from seqlab.decoding.verify import roll_back


@dataclass
class Level:
    """The nodes at one depth of the trees of all rows (n nodes per row).

    tokens, parent, valid: (R, n); parent indexes the previous level (depth 1: the root, 0).
    Siblings are contiguous and in the order they were drawn.
    """

    tokens: Tensor
    parent: Tensor
    valid: Tensor


def _gumbel(shape, generator, device) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))


def _children_topk(logq: Tensor, k: int, sampling: SamplingConfig, generator) -> tuple[Tensor, Tensor]:
    """k children per node: Gumbel-top-k of log q (a draw without replacement), or top-k when
    greedy. ``logq: (N, V)`` -> tokens (N, k), valid (N, k)."""
    k = min(k, logq.shape[-1])
    scores = logq.double()
    if not sampling.greedy:
        scores = scores + _gumbel(scores.shape, generator, logq.device)
    top = scores.topk(k, dim=-1)
    return top.indices, torch.isfinite(top.values)


def _conditioned_gumbel(phi: Tensor, parent_g: Tensor, generator) -> Tensor:
    """Stochastic beam search: perturb the children's log-probs ``phi (N, V)`` with Gumbels
    conditioned so their maximum equals the parent's perturbed value ``parent_g (N,)``."""
    g = phi + _gumbel(phi.shape, generator, phi.device)
    z = g.max(-1, keepdim=True).values
    # -log(exp(-T) - exp(-Z) + exp(-g)) computed stably (Kool et al. 2019, appendix B).
    t = parent_g[:, None]
    v = t - g + torch.log1p(-torch.exp((g - z).clamp(max=0)).clamp(max=1 - 1e-16))
    out = t - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
    return torch.where(torch.isfinite(phi), out, torch.full_like(out, float("-inf")))


@dataclass(frozen=True)
class TreeConfig(Config):
    """The tree's shape: ``branching`` (children per node at each depth; default 2,2,1,1) or
    ``beam_width`` with ``depth`` (the stochastic-beam tree), and how it is verified."""

    branching: tuple[int, ...] | None = option(None, "tree: children per node at each depth, "
                                                     "e.g. 2,2,1,1 (the default); ngram-tree: "
                                                     "at most so many")
    beam_width: int | None = option(None, "tree: stochastic-beam tree width (with --depth)")
    depth: int | None = option(None, "tree: depth of the stochastic-beam tree")
    tree_attention: bool | None = option(None, "tree: verify as one row with tree attention "
                                               "(default: when the target can) or as one "
                                               "batch row per leaf")

    def validate(self) -> None:
        if self.branching is not None and self.beam_width is not None:
            raise ConfigError("strategy 'tree' takes branching=(b1, b2, ...) or beam_width=W "
                              "with depth=D, not both")
        if self.beam_width is not None:
            if self.beam_width < 1:
                raise ConfigError(f"beam_width = {self.beam_width!r} is not allowed: expected "
                                  "an int >= 1")
            if self.depth is None or self.depth < 1:
                raise ConfigError(f"depth = {self.depth!r} is not allowed: strategy 'tree' with "
                                  "beam_width needs depth, an int >= 1")
        elif self.depth is not None:
            raise ConfigError("depth is set by branching=(b1, b2, ...) (one entry per depth); "
                              "pass depth only with beam_width")
        if self.branching is not None and (not self.branching
                                           or not all(b >= 1 for b in self.branching)):
            raise ConfigError(f"branching = {self.branching!r} is not allowed: expected a "
                              "non-empty sequence of ints >= 1, children per node at each depth")

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The fixed branching, or None for the stochastic-beam tree."""
        if self.beam_width is not None:
            return None
        return self.branching if self.branching is not None else (2, 2, 1, 1)


def tree_attention_for(model, wanted: bool | None) -> bool:
    """Whether a tree strategy verifies with tree attention: ``wanted``, or (None) whenever the
    target declares the tree capability.

    Raises:
        ConfigError: tree attention wanted from a target that does not declare it.
    """
    supported = model.capabilities.tree
    if wanted and not supported:
        raise ConfigError("tree_attention=True needs a target that declares the tree capability "
                          "(every layer attention without a window); leave it unset to verify "
                          "branches as batch rows")
    return supported if wanted is None else wanted


@register("tree", TreeConfig, samples="optional", needs_draft=True)
def tree(model, req: Request, cfg: TreeConfig) -> GenerateOutput:
    """Tree speculative decoding with ``req.draft`` growing the trees (see the module docstring)."""
    tree_attention = tree_attention_for(model, cfg.tree_attention)
    stats = DecodeStats(strategy="tree", options={**cfg.to_dict(), "tree_attention": tree_attention},
                        trees=[])
    from seqlab.decoding.drafters import HiddenDrafter

    if isinstance(req.draft, HiddenDrafter):   # a drafter trained on the target's hidden states
        from seqlab.decoding.strategies.hidden import HiddenTreeProposer

        proposer = HiddenTreeProposer(model, req.draft, req, cfg, tree_attention, stats)
    else:
        proposer = TreeProposer(model, req.draft, req, cfg, tree_attention, stats)
    return draft_and_verify(model, req, proposer, stats)


def _first_row_tree(last: Tensor, levels: list[Level], path) -> dict:
    """Row 0's tree of a round as plain data (see ``DecodeStats.trees``)."""
    nodes = [[d, j, int(lv.parent[0, j]), int(lv.tokens[0, j])]
             for d, lv in enumerate(levels) for j in range(lv.tokens.shape[1]) if lv.valid[0, j]]
    return {"root": int(last[0]), "nodes": nodes, "accepted": [[d, j] for d, j in path]}


@dataclass
class TreeDraft:
    """One round's trees: the root ``last`` per row, the ``depth`` levels below it, the
    draft's probabilities at every non-leaf node (sampling; None for a deterministic
    proposer, whose children are point masses) and a draft model's states after each depth."""

    proposer: "TreeVerifier"
    last: Tensor
    levels: list[Level]
    qs: list[Tensor] | None
    dstates: list
    depth: int
    accepted: list = field(default_factory=list)  # per row, the accepted path, after verify

    def verify(self, model, state, fed: list[int], req: Request, stats: DecodeStats) -> Verdict:
        return self.proposer.verify(self, model, state, fed, stats)


class TreeVerifier:
    """Verifies a round's trees (a ``TreeDraft``) in one target call and accepts down them.

    A tree proposer subclasses it and grows the trees (``start``, ``propose``, ``advance``,
    ``select``, ``finish`` of ``seqlab.decoding.loop.Proposer``); the levels may be ragged
    across rows (padding nodes are not ``valid``) and nodes may have no children.
    """

    def __init__(self, model, req: Request, tree_attention: bool, stats: DecodeStats):
        self.model, self.sampling, self.gen = model, req.sampling, req.generator
        self.tree_attention = tree_attention
        self.V = model.vocab_size
        self.stats = stats

    def verify(self, tree: TreeDraft, model, tstate, fed: list[int], stats: DecodeStats) -> Verdict:
        last, levels, R = tree.last, tree.levels, tree.last.shape[0]
        tok_l = [lv.tokens.tolist() for lv in levels]
        if self.tree_attention:
            where, t_logits, verified = self.verify_tree(last, levels, tstate)
        else:
            paths = self.leaves(levels) if levels else [[[]] for _ in range(R)]
            where, t_logits, verified, seq = self.verify_rows(last, levels, paths, tok_l,
                                                              tstate, tree.depth)
        stats.target_calls += 1
        # walk each row's tree: accept down a path, then one token of the target
        counts, tokens = [], []
        for r in range(R):
            path, token = self.accept(r, where[r], t_logits, tok_l, levels, tree.qs)
            counts.append(len(path))
            tree.accepted.append(path)
            tokens.append([tok_l[d][r][j] for d, j in path] + [token])
        tree.tok_l, tree.where = tok_l, where
        if len(stats.trees) < TREES_KEPT:
            stats.trees.append(_first_row_tree(last, levels, tree.accepted[0]))

        def rolled_back():
            if self.tree_attention:
                offsets = self._offsets(levels)
                return verified.keep(fed, [[0] + [1 + offsets[d] + j for d, j in path]
                                           for path in tree.accepted])
            chosen = [where[r][tree.accepted[r][-1] if tree.accepted[r] else (-1, 0)][0]
                      for r in range(R)]
            return roll_back(model, seq[chosen], tstate, verified.select(chosen), counts, fed,
                             stats)

        return Verdict(counts, tokens, rolled_back)

    def leaves(self, levels: list[Level]):
        """Per row the leaf paths: lists of (depth, node) from depth 1 down to a leaf."""
        R = levels[0].tokens.shape[0]
        valid = [lv.valid.tolist() for lv in levels]
        parent = [lv.parent.tolist() for lv in levels]
        out = []
        for r in range(R):
            has_child = [[False] * len(valid[d][r]) for d in range(len(levels))]
            for d in range(1, len(levels)):
                for j, ok in enumerate(valid[d][r]):
                    if ok:
                        has_child[d - 1][parent[d][r][j]] = True
            paths = []
            for d in range(len(levels)):
                for j, ok in enumerate(valid[d][r]):
                    if ok and not has_child[d][j]:
                        path = [(d, j)]
                        for dd in range(d, 0, -1):
                            path.append((dd - 1, parent[dd][r][path[-1][1]]))
                        paths.append(path[::-1])
            out.append(paths or [[]])  # no valid child at all: the root alone is the leaf
        return out

    # -- the two ways to verify ------------------------------------------------------------
    @staticmethod
    def _offsets(levels: list[Level]) -> list[int]:
        """Index of each level's first node among all nodes in level order."""
        out, n = [], 0
        for lv in levels:
            out.append(n)
            n += lv.tokens.shape[1]
        return out

    def verify_tree(self, last: Tensor, levels: list[Level], tstate):
        """One row per sequence: ``last`` then every node in level order, with tree attention
        (each node sees the cache, its ancestors and itself)."""
        R, device = last.shape[0], last.device
        offsets = self._offsets(levels)
        N = 1 + sum(lv.tokens.shape[1] for lv in levels)
        tokens = torch.cat([last[:, None]] + [lv.tokens for lv in levels], 1)
        depth = torch.cat([torch.zeros(R, 1, dtype=torch.long, device=device)]
                          + [torch.full_like(lv.tokens, d + 1) for d, lv in enumerate(levels)], 1)
        visible = torch.zeros(R, N, N, dtype=torch.bool, device=device)
        visible[:, 0, 0] = True
        for d, lv in enumerate(levels):
            first = 1 + offsets[d]
            parent_rows = (1 + offsets[d - 1] if d else 0) + lv.parent  # (R, n) flat parent index
            rows = visible.gather(1, parent_rows[..., None].expand(-1, -1, N))
            idx = torch.arange(first, first + lv.tokens.shape[1], device=device)
            rows[:, torch.arange(len(idx), device=device), idx] = True
            visible[:, first:first + len(idx)] = rows
        t_logits, verified = self.score_tree(tokens, tstate, depth, visible)
        where = [{(-1, 0): (r, 0), **{(d, j): (r, 1 + offsets[d] + j) for d, lv in enumerate(levels)
                                      for j in range(lv.tokens.shape[1])}} for r in range(R)]
        return where, t_logits, verified

    def verify_rows(self, last, levels, paths, tok_l, tstate, depth):
        """One batch row per leaf path (works for every model, recurrent ones included)."""
        device = last.device
        seq_rows, owner, where = [], [], []
        for r in range(len(paths)):
            w = {(-1, 0): (len(seq_rows), 0)}
            for path in paths[r]:
                for pos, node in enumerate(path, start=1):
                    w.setdefault(node, (len(seq_rows), pos))
                toks = [tok_l[d][r][j] for d, j in path]
                seq_rows.append([int(last[r])] + toks + [0] * (depth - len(toks)))
                owner.append(r)
            where.append(w)
        seq = torch.tensor(seq_rows, dtype=torch.long, device=device)
        t_logits, verified = self.score_rows(seq, tstate.select(owner))
        return where, t_logits, verified, seq

    def score_tree(self, tokens, tstate, depth, visible):
        """The target's logits at every node with tree attention (a subclass may keep more)."""
        return self.model.forward_tree(tokens, tstate, depth, visible)

    def score_rows(self, seq, tstate):
        """The target's logits along every leaf path laid out as rows."""
        return self.model(seq, tstate)

    def accept(self, r, where, t_logits, tok_l, levels, qs):
        """Recursive rejection down row r's tree; returns (the accepted nodes, next token).

        ``where`` maps a node (level, index; the root is (-1, 0)) to the place of its target
        logits (row, position) in ``t_logits``. ``qs`` None: the children are point masses
        (a deterministic proposer); then each node draws the target's token and follows the
        child equal to it, which is what recursive rejection with point masses reduces to.
        """
        sampling, gen = self.sampling, self.gen
        children: dict[tuple[int, int], list[int]] = {}
        for d, lv in enumerate(levels):
            par, ok = lv.parent[r].tolist(), lv.valid[r].tolist()
            for j in range(len(par)):
                if ok[j]:
                    children.setdefault((d - 1, par[j] if d else 0), []).append(j)
        node, path = (-1, 0), []
        while True:
            row, pos = where[node]
            logits = t_logits[row, pos][None]
            kids = children.get(node, [])
            d = node[0] + 1
            if sampling.greedy or qs is None:
                best = int(choose(logits, sampling, gen))  # argmax when greedy
                hit = next((j for j in kids if tok_l[d][r][j] == best), None)
                if hit is None:
                    return path, best
                node = (d, hit)
                path.append(node)
                continue
            p = probabilities(logits, sampling)[0].double()
            q = qs[d][r, node[1] if d else 0].clone() if kids else None
            accepted = None
            for j in kids:
                x = tok_l[d][r][j]
                if torch.rand((), generator=gen, device=p.device, dtype=torch.float64) * q[x] < p[x]:
                    accepted = j
                    break
                residual = (p - q).clamp(min=0)
                p = residual / residual.sum() if residual.sum() > 0 else p
                q[x] = 0
                q = q / q.sum() if q.sum() > 0 else q
            if accepted is None:
                return path, int(torch.multinomial(p.float(), 1, generator=gen))
            node = (d, accepted)
            path.append(node)


class TreeProposer(TreeVerifier):
    """Trees grown by a draft model (``branching`` or a stochastic beam; the module docstring)."""

    def __init__(self, model, draft, req: Request, cfg: TreeConfig, tree_attention: bool,
                 stats: DecodeStats):
        super().__init__(model, req, tree_attention, stats)
        self.draft = draft
        self.draft_tree = tree_attention and draft.capabilities.tree
        self.branching, self.beam_width = cfg.shape, cfg.beam_width
        self.depth = len(self.branching) if self.branching is not None else cfg.depth
        self.dstate = None
        self.fed: list[int] = []

    # -- the proposer interface -------------------------------------------------------------
    def start(self, rows: list[list[int]], first: list[int]) -> None:
        _, self.dstate, calls = prefill(self.draft, rows)
        self.stats.draft_calls += calls
        self.fed = [len(r) for r in rows]

    def propose(self, last: Tensor, room: list[int]) -> TreeDraft:
        R = last.shape[0]
        depth = min(self.depth, max(room))  # never draft past what any row may emit
        self._g = torch.zeros(R, 1, dtype=torch.float64, device=last.device)  # beam: root's Gumbel
        if depth:
            levels, qs, dstates = self.grow(last, self.dstate, depth)
        else:
            levels, qs = [], []
            _, s = self.draft.step(last, self.dstate)
            self.stats.draft_calls += 1
            dstates = [s]
        return TreeDraft(self, last, levels, qs, dstates, depth)

    def advance(self, tree: TreeDraft, verdict: Verdict) -> None:
        R = len(verdict.counts)
        self.dstate = self._draft_state(tree.accepted, tree.last, tree.tok_l, tree.levels,
                                        tree.dstates, R, self.fed)
        self.fed = [f + n + 1 for f, n in zip(self.fed, verdict.counts)]

    def select(self, keep: list[int]) -> None:
        self.dstate = self.dstate.select(keep)
        self.fed = [self.fed[i] for i in keep]

    def finish(self, stats: DecodeStats) -> None:
        pass

    # -- the draft's tree ----------------------------------------------------------------
    def _log_q(self, logits: Tensor) -> Tensor:
        """The draft's log-distribution the children are drawn from (filtered like sampling)."""
        if self.sampling.greedy:
            return logits.double().log_softmax(-1)
        return probabilities(logits, self.sampling).double().log()

    def grow(self, last: Tensor, dstate, depth: int):
        """Draft a tree of ``depth`` levels below ``last`` for every row.

        Returns the levels, the draft's probabilities at every non-leaf node (list per depth
        0..depth-1, each (R, n, V), sampling only) and the draft states after each node
        (list per depth 0..depth-1, rows r * n + j).
        """
        R = last.shape[0]
        logits, s = self.draft.step(last, dstate)
        self.stats.draft_calls += 1
        states, qs, levels = [s], [], []
        anc = torch.zeros(R, 0, 0, dtype=torch.bool, device=last.device)  # draft tree: ancestors
        logq = self._log_q(logits)  # (R * n_prev, V)
        score = torch.zeros(R, 1, dtype=torch.float64, device=last.device)  # beam: per node
        n_prev = 1
        for d in range(depth):
            if not self.sampling.greedy:
                qs.append(logq.exp().view(R, n_prev, self.V))
            if self.branching is not None:
                k = self.branching[d]
                tok, ok = _children_topk(logq, k, self.sampling, self.gen)  # (R*n_prev, k)
                k = tok.shape[1]
                parent = torch.arange(n_prev, device=last.device).repeat_interleave(k)
                level = Level(tok.view(R, n_prev * k), parent.expand(R, -1).clone(),
                              ok.view(R, n_prev * k))
                if levels:  # children of an invalid node are invalid
                    level.valid &= levels[-1].valid.gather(1, level.parent)
            else:
                level, score = self._beam_level(logq.view(R, n_prev, self.V), score,
                                                levels[-1].valid if levels else None)
            levels.append(level)
            n = level.tokens.shape[1]
            self.stats.drafted += int(level.valid.sum())
            if d + 1 < depth:
                if self.draft_tree:  # one row per sequence: the tree's nodes share its cache
                    anc = self._extend_ancestors(anc, level, n_prev)
                    logits, s = self.draft.forward_tree(
                        level.tokens, states[-1], torch.full_like(level.tokens, d),
                        anc[:, -n:])
                    logits = logits.flatten(0, 1)
                else:  # one row per node, its state copied from its parent's
                    flat_parent = (torch.arange(R, device=last.device)[:, None] * n_prev
                                   + level.parent).flatten()
                    logits, s = self.draft.step(level.tokens.flatten(),
                                                states[-1].select(flat_parent))
                self.stats.draft_calls += 1
                states.append(s)
                logq = self._log_q(logits)
            n_prev = n
        return levels, qs, states

    @staticmethod
    def _extend_ancestors(anc: Tensor, level: Level, n_prev: int) -> Tensor:
        """Add a level to the ancestor-or-self matrix ``(R, N, N)`` of the nodes fed so far
        (level order, the root excluded: it is an ordinary cache entry)."""
        R, N, n = anc.shape[0], anc.shape[1], level.tokens.shape[1]
        out = torch.zeros(R, N + n, N + n, dtype=torch.bool, device=anc.device)
        out[:, :N, :N] = anc
        if N:  # a child sees what its parent sees, the parent included
            parents = (N - n_prev) + level.parent
            out[:, N:, :N] = anc.gather(1, parents[..., None].expand(-1, -1, N))
        out[:, torch.arange(N, N + n), torch.arange(N, N + n)] = True
        return out

    def _beam_level(self, logq: Tensor, score: Tensor, parent_valid: Tensor | None):
        """The next level of a (stochastic) beam: W best children over all nodes per row."""
        R, n_prev, V = logq.shape
        phi = score[..., None] + logq  # cumulative log q of every child
        if parent_valid is not None:
            phi = phi.masked_fill(~parent_valid[..., None], float("-inf"))
        if self.sampling.greedy:
            key = phi
        else:
            key = _conditioned_gumbel(phi.view(-1, V), self._g.view(-1), self.gen).view(R, n_prev, V)
        W = min(self.beam_width, n_prev * V)
        top = key.view(R, -1).topk(W, dim=-1)
        parent, tok = top.indices // V, top.indices % V
        # Group siblings (stable: within a parent they stay in drawn order, best first).
        order = parent.sort(dim=1, stable=True).indices
        parent, tok = parent.gather(1, order), tok.gather(1, order)
        keys = top.values.gather(1, order)
        if not self.sampling.greedy:
            self._g = keys
        return (Level(tok, parent, torch.isfinite(keys)),
                phi.view(R, -1).gather(1, (parent * V + tok)))

    def _draft_state(self, accepted, last, tok_l, levels, dstates, R, fed):
        """The draft state covering last + each row's accepted path."""
        if self.draft_tree:
            return self._draft_state_tree(accepted, last, tok_l, levels, dstates, R, fed)
        parts = []
        counts = [len(p) for p in accepted]
        for n, idx in groups(counts).items():
            if n < len(dstates):  # dstates[n]: after the depth-n nodes, rows r * n_nodes + j
                width = levels[n - 1].tokens.shape[1] if n else 1
                flat = [r * width + (accepted[r][-1][1] if n else 0) for r in idx]
                parts.append((idx, dstates[n].select(flat)))
            else:  # accepted a full-depth leaf: the draft has not seen it yet
                width = levels[n - 2].tokens.shape[1] if n >= 2 else 1
                prev = [r * width + (accepted[r][-2][1] if n >= 2 else 0) for r in idx]
                leaf = torch.tensor([tok_l[n - 1][r][accepted[r][-1][1]] for r in idx],
                                    device=last.device)
                _, s = self.draft.step(leaf, dstates[n - 1].select(prev))
                self.stats.draft_calls += 1
                parts.append((idx, s))
        return combine(parts, R)

    def _draft_state_tree(self, accepted, last, tok_l, levels, dstates, R, fed):
        """Keep the accepted path in the draft's tree cache; feed a full-depth leaf."""
        offsets = self._offsets(levels)
        fed_levels = len(dstates) - 1  # levels whose nodes are in the draft's cache
        kept = [[offsets[d] + j for d, j in path if d < fed_levels] for path in accepted]
        state = dstates[-1].keep([f + 1 for f in fed], kept)
        deep = [r for r in range(R) if len(accepted[r]) > fed_levels]
        if not deep:
            return state
        leaf = torch.tensor([tok_l[accepted[r][-1][0]][r][accepted[r][-1][1]] for r in deep],
                            device=last.device)
        _, s = self.draft.step(leaf, state if len(deep) == R else state.select(deep))
        self.stats.draft_calls += 1
        if len(deep) == R:
            return s
        rest = [r for r in range(R) if r not in set(deep)]
        return combine([(deep, s), (rest, state.select(rest))], R)

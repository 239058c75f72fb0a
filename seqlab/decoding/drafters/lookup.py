"""Training-free drafters: propose tokens from the context alone, no draft model.

Each drafter holds one row's context. ``extend(tokens)`` appends verified tokens
(prompt, then the model's own outputs); ``propose(k)`` returns up to ``k`` draft
tokens (possibly none). The strategies in ``seqlab.decoding.strategies.lookup``
verify the drafts with the target in one call per round.
"""

from __future__ import annotations

from collections.abc import Iterable


class PromptLookup:
    """Prompt lookup decoding: copy what followed the last earlier occurrence of the suffix.

    For n from ``max_ngram`` down to 1, find the most recent earlier occurrence of the
    context's last n tokens; the draft is the tokens that followed it. The copy runs on
    past the end of the context the way LZ77 copies overlap (the draft's own tokens
    continue the copy), so a short cycle still yields ``k`` tokens.

    An index maps every n-gram that has a follower to the position of that follower
    (the latest occurrence wins), so a proposal costs O(max_ngram + k).
    """

    explored = None  # no exploration rule (see NGramDrafter.explored)

    def __init__(self, max_ngram: int = 3):
        self.max_ngram = max_ngram
        self.tokens: list[int] = []
        self.index: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_ngram + 1)]

    def extend(self, tokens: Iterable[int]) -> None:
        toks = self.tokens
        for t in tokens:
            i = len(toks)  # t lands at position i: every n-gram ending at i - 1 now has a follower
            for n in range(1, min(self.max_ngram, i) + 1):
                self.index[n][tuple(toks[i - n:i])] = i
            toks.append(t)

    def match(self, suffix: list[int]) -> int | None:
        """Position of the token that followed the latest occurrence of the longest suffix."""
        for n in range(min(self.max_ngram, len(suffix)), 0, -1):
            pos = self.index[n].get(tuple(suffix[-n:]))
            if pos is not None:
                return pos
        return None

    def propose(self, k: int) -> list[int]:
        toks = self.tokens
        pos = self.match(toks[-self.max_ngram:])
        if pos is None or k <= 0:
            return []
        L = len(toks)
        draft: list[int] = []
        for j in range(k):
            p = pos + j
            draft.append(toks[p] if p < L else draft[p - L])
        return draft


class NGramTable:
    """Tri-gram counts: for a pair of tokens (a, b), how often each c followed, and when last.

    One table may serve many drafters: every row of a generate call and every later call
    that is handed it (``generate(..., "ngram", draft=table)``), so what the model produced
    for one request drafts the next (ADED's table persists and adapts across requests).
    ``clock`` counts the tokens observed, so "most recent" breaks ties across rows and calls.
    """

    def __init__(self):
        self.counts: dict[tuple[int, int], dict[int, list[int]]] = {}
        self.clock = 0

    def add(self, a: int, b: int, c: int) -> None:
        """One more observation of ``c`` after ``(a, b)``."""
        self.clock += 1
        entry = self.counts.setdefault((a, b), {}).setdefault(c, [0, 0])
        entry[0] += 1
        entry[1] = self.clock

    def ranked(self, a: int, b: int) -> list[tuple[int, int]]:
        """(count, token) of the pair's continuations, best first (ties: most recent first)."""
        seen = self.counts.get((a, b))
        if not seen:
            return []
        ranked = sorted(seen.items(), key=lambda kv: (kv[1][0], kv[1][1]), reverse=True)
        return [(v[0], c) for c, v in ranked]

    def __len__(self) -> int:
        return sum(len(v) for v in self.counts.values())


class NGramDrafter:
    """Adaptive tri-gram drafter in the spirit of ADED (Liu et al., arXiv:2406.08200).

    A table (:class:`NGramTable`) counts, for every pair of previous tokens (a, b), how
    often each token c followed; it is built from the prompt and updated with every verified
    token the model emits, so it adapts to the model's own outputs during one generate call
    and, when the table is shared (``table``), across rows and calls. Drafts walk the table
    token by token (the draft's own tokens extend the context):

    * exploitation: when the pair's best continuation is confident -- seen at least
      ``min_count`` times and strictly more often than the runner-up -- propose it;
    * exploration: otherwise (a tie, or too few observations) propose what followed the
      latest occurrence of the longest matching suffix in this row (prompt lookup, n from
      ``max_ngram`` down to 1): a longer context than the pair when it exists, the most
      recent continuation rather than the most frequent one, and a guess from the last
      token alone for a pair never seen;
    * the draft stops early where nothing at all has been seen (the last token never had a
      follower).

    Explorations are counted in ``explored`` (tokens proposed by the exploration rule).
    ``propose_tree`` drafts a tree instead of a chain (the ``ngram-tree`` strategy).
    """

    def __init__(self, max_ngram: int = 3, min_count: int = 2, table: NGramTable | None = None):
        self.min_count = min_count
        self.lookup = PromptLookup(max_ngram)
        self.table = NGramTable() if table is None else table
        self.explored = 0

    @property
    def tokens(self) -> list[int]:
        return self.lookup.tokens

    def extend(self, tokens: Iterable[int]) -> None:
        toks = self.lookup.tokens
        for t in tokens:
            if len(toks) >= 2:
                self.table.add(toks[-2], toks[-1], t)
            self.lookup.extend([t])

    def _ranked(self, a: int, b: int) -> list[tuple[int, int]]:
        return self.table.ranked(a, b)

    def _confident(self, ranked: list[tuple[int, int]]) -> bool:
        return bool(ranked) and ranked[0][0] >= self.min_count and (
            len(ranked) == 1 or ranked[0][0] > ranked[1][0])

    def _looked_up(self, ctx: list[int]) -> int | None:
        """What followed the latest occurrence of the longest suffix of ``ctx`` in this row."""
        pos = self.lookup.match(ctx[-self.lookup.max_ngram:])
        return None if pos is None else self.lookup.tokens[pos]

    def _next(self, ctx: list[int]) -> int | None:
        ranked = self._ranked(ctx[-2], ctx[-1]) if len(ctx) >= 2 else []
        if self._confident(ranked):
            return ranked[0][1]  # exploit
        t = self._looked_up(ctx)
        if t is not None:
            self.explored += 1
        return t

    def candidates(self, ctx: list[int], k: int) -> list[int]:
        """Up to ``k`` distinct next tokens after ``ctx``, best first.

        A confident pair (as in ``propose``) gives its ``k`` most frequent continuations;
        an unsure one puts the exploration token (prompt lookup) first and fills up with the
        table's ranking, so a weak count still drafts where the lookup finds nothing. With a
        table of the row's own, ``k = 1`` is exactly ``propose``'s rule.
        """
        if k <= 0:
            return []
        ranked = self._ranked(ctx[-2], ctx[-1]) if len(ctx) >= 2 else []
        out: list[int] = []
        if not self._confident(ranked):
            t = self._looked_up(ctx)
            if t is not None:
                self.explored += 1
                out.append(t)
        for _, c in ranked:
            if len(out) >= k:
                break
            if c not in out:
                out.append(c)
        return out[:k]

    def propose_tree(self, branching: tuple[int, ...], max_nodes: int | None = None
                     ) -> list[list[tuple[int, int]]]:
        """A draft tree: at depth d every node gets up to ``branching[d]`` children, the
        ``candidates`` after the context extended by the node's own path.

        Returns per depth the nodes as ``(parent, token)``, parent indexing the depth above (0,
        the root, at depth 0); siblings are contiguous and distinct. The tree ends where no
        node has a child, or once it holds ``max_nodes`` nodes (filled level by level, the
        best children of the earlier nodes first).

        Example:
            >>> d = NGramDrafter(); d.extend([1, 2, 3, 1, 2, 4, 1, 2])
            >>> d.propose_tree((2, 1))    # (1, 2): a tie, so the looked-up 4, then 3
            [[(0, 4), (0, 3)], [(0, 1), (1, 1)]]
        """
        budget = max_nodes if max_nodes is not None else float("inf")
        ctxs = [self.lookup.tokens[-max(self.lookup.max_ngram, 2):]]  # per node of the level
        levels: list[list[tuple[int, int]]] = []
        for k in branching:
            level, nxt = [], []
            for i, ctx in enumerate(ctxs):
                for t in self.candidates(ctx, min(k, budget - len(level))):
                    level.append((i, t))
                    nxt.append(ctx[1:] + [t])  # the draft's own token extends the context
            if not level:
                break
            levels.append(level)
            budget -= len(level)
            ctxs = nxt
        return levels

    def propose(self, k: int) -> list[int]:
        ctx = self.lookup.tokens[-max(self.lookup.max_ngram, 2):]
        draft: list[int] = []
        for _ in range(k):
            t = self._next(ctx)
            if t is None:
                break
            draft.append(t)
            ctx = ctx[1:] + [t]
        return draft


"""pLSTM: linear Source, Transition and Mark gates on a DAG, here a line and a 2-D grid.

Paper: Pöppel et al. 2025, "pLSTM: parallelizable Linear Source Transition Mark networks"
(arXiv:2506.11997). A pLSTM carries one state per *edge* of a directed acyclic graph.
A node takes the states on its incoming edges, mixes them into each outgoing edge through
scalar Transition gates, adds its own input ``k vᵀ`` weighted by a Source gate, and reads
its incoming states through Mark gates (plus a Direct gate on its own input). Everything is
linear in the states, so the whole graph can be evaluated in parallel.

**2-D grid** (``m.grid(x)``, x: (B, rows, cols, D)). Every cell has an outgoing right edge
and an outgoing down edge; states flow right and down from the top-left corner. Per head,
with ``L`` the state arriving from the left neighbour and ``U`` the one from above (zero
off the grid)::

    C_right = T_rl L + T_ru U + S_r k vᵀ        C_down = T_dl L + T_du U + S_d k vᵀ
    y = qᵀ (M_l L + M_u U + D k vᵀ)

Two ways to keep the sum over the exponentially many grid paths bounded (paper Sec. 3):

* P-mode (propagation): a direction share p in (0, 1) and a decay lam in (0, 1] per cell;
  ``T_rl = T_ru = lam p``, ``T_dl = T_du = lam (1 - p)``, ``S_r = s p``, ``S_d = s (1 - p)``,
  ``M_l = M_u``. The outgoing transitions of each edge sum to lam <= 1, so the paths from a
  source carry at most its mass, concentrated along the direction that p points to.
* D-mode (distribution): ``T_ru = 0``: a state from above only continues down, one from the
  left may go right or turn down. Exactly one path then joins two cells (right along the
  source's row, then down), so gates in (0, 1] neither blow up nor force decay: a source
  reaches its whole lower-right quadrant. All gates are independent sigmoids.

``corners = 4`` runs the grid from each corner (grids flipped, gates of its own per corner,
q, k, v shared) and averages the four normalised outputs, as the paper's vision model does;
every cell then sees the whole image.

**1-D face** (``m(x, state)``, x: (B, T, D)): a line is the grid of height 1 read from its
left end. No state arrives from above and the down edges leave the grid, so it is the
linear recurrence of corner 0's right-going state::

    C_t = T_rl,t C_{t-1} + S_r,t k_t v_tᵀ        y_t = q_tᵀ (M_l,t C_{t-1} + D_t k_t v_tᵀ)

``m.grid(x[:, None])[:, 0]`` equals ``m(x)[0]`` for ``corners = 1`` (tested); with four
corners the 1-D face is corner 0's part, and the other corners' gates are unused on a line.
On a line the two modes differ only in how T_rl is made: lam p in P-mode (the share 1 - p
would go down, off the line), a free gate in D-mode, which is why D is the default here.

**Parallel evaluation** (:func:`plstm_grid`), the 2-D analogue of chunkwise linear attention:
the grid is cut into blocks. Inside a block every gate is a scalar, so the weight with which
each source (a cell's ``k vᵀ`` or a state entering the block's border) reaches each cell's
mark and each outgoing border edge is found for all blocks at once by a scalar recurrence
over the block's rows, each row one cumulative product (a (bw, bw) matmul); the cells then
attend to each other with that weight as the mask. Only the (Dk, Dv) states on block borders
are carried from block to block. The 1-D face is the same code on a 1 x T grid in blocks of
1 x chunk_size, with the carried state entering the left border.

Example:
    >>> m = seqlab.mixers.build("plstm", dim=64, heads=4)
    >>> y, s = m(torch.randn(2, 100, 64))                 # s.C: (2, 4, 16, 16)
    >>> img = seqlab.mixers.build("plstm", dim=64, mode="P", corners=4)
    >>> img.grid(torch.randn(2, 16, 16, 64)).shape
    torch.Size([2, 16, 16, 64])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer, heads_divide
from seqlab.nn import RMSNorm
from seqlab.state import State

# Gate logits per head and corner: P-mode (direction, decay, source, mark, direct);
# D-mode (T_rl, T_du, T_dl, S_r, S_d, M_l, M_u, D).
_GATES = {"P": 5, "D": 8}
# Corner c flips (rows, cols) so that its source corner becomes the top-left one.
_FLIPS = ((False, False), (False, True), (True, False), (True, True))


@dataclasses.dataclass(frozen=True)
class PLSTMConfig(Config):
    """Options of the ``plstm`` mixer.

    Attributes:
        heads: number of heads; must divide ``dim`` (Dk = Dv = dim // heads).
        mode: "P" (propagation: directional, decaying) or "D" (distribution: one path
            between two cells); see the module docstring.
        corners: grid corners the 2-D path runs from: 1 (top-left) or 4 (all, averaged).
            The 1-D face always uses corner 0.
        chunk_size: tokens per chunk of the 1-D face's parallel evaluation.
        block: side of the square blocks of the 2-D evaluation. Neither size changes the
            result, only speed and memory.
    """

    heads: int = 4
    mode: Literal["P", "D"] = "D"
    corners: int = 1
    chunk_size: int = 64
    block: int = 8

    def validate(self) -> None:
        require(self.heads >= 1, self, "heads", "a positive int")
        require(self.corners in (1, 4), self, "corners", "1 (top-left) or 4 (every corner)")
        require(self.chunk_size >= 1, self, "chunk_size", "a positive int")
        require(self.block >= 1, self, "block", "a positive int")


@dataclasses.dataclass(frozen=True)
class PLSTMState(State):
    """The 1-D face's state: the right-going edge state leaving the last token.

    Attributes:
        C: (B, H, Dk, Dv), in the dtype asked of ``init_state`` (compute runs in at
            least float32).
    """

    C: Tensor


@dataclasses.dataclass(frozen=True)
class GridGates:
    """Scalar gates of a grid scan, each (B, H, rows, cols) (H: heads, times corners).

    ``log_trl`` is kept as a log (<= 0) because rows are scanned with cumulative sums of it;
    ``tru`` None means zero (D-mode).
    """

    log_trl: Tensor
    tru: Tensor | None
    tdl: Tensor
    tdu: Tensor
    src_r: Tensor
    src_d: Tensor
    mark_l: Tensor
    mark_u: Tensor
    direct: Tensor

    def map(self, fn: Callable[[str, Tensor], Tensor]) -> "GridGates":
        """Apply ``fn(name, tensor)`` to every gate (None stays None)."""
        return GridGates(**{f.name: None if getattr(self, f.name) is None
                            else fn(f.name, getattr(self, f.name))
                            for f in dataclasses.fields(self)})


def plstm_grid(q: Tensor, k: Tensor, v: Tensor, gates: GridGates, block: tuple[int, int],
               left: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """pLSTM over a grid whose states flow right and down, evaluated block by block.

    Args:
        q, k: (B, H, rows, cols, Dk) queries and keys.
        v: (B, H, rows, cols, Dv) values.
        gates: per-cell scalar gates (:class:`GridGates`), (B, H, rows, cols) each.
        block: (block_rows, block_cols); any sizes give the same result.
        left: optional (B, H, rows, Dk, Dv) states entering each row from the left of the
            grid (the 1-D face's carried state); zero when None.

    Returns:
        o: (B, H, rows, cols, Dv), ``qᵀ (M_l L + M_u U + D k vᵀ)`` at every cell, and
        right: (B, H, rows, Dk, Dv), the right-going state leaving each row's last cell.

    Time O(rows cols (bh bw (Dk + Dv) + (bh + bw) Dk Dv)) for blocks bh x bw; memory
    O(rows cols bh bw) besides the block-border states. Every exponent is a difference of
    row-wise cumulative log transitions, <= 0, so nothing overflows.
    """
    B, H, R, C, Dk = q.shape
    Dv = v.shape[-1]
    bh, bw = min(block[0], R), min(block[1], C)
    nr, nc = -(-R // bh), -(-C // bw)
    pr, pc = nr * bh - R, nc * bw - C
    if pr or pc:
        # Padding sits below and right of every real cell, so it never reaches one. A
        # transition of 1 (log 0) with no source carries the right-going state across
        # padded columns unchanged: ``right`` stays the state after each row's last cell.
        q, k, v = (F.pad(t, (0, 0, 0, pc, 0, pr)) for t in (q, k, v))
        gates = gates.map(lambda _, t: F.pad(t, (0, pc, 0, pr)))
        if left is not None:
            left = F.pad(left, (0, 0, 0, 0, 0, pr))

    def blocks(t: Tensor) -> Tensor:
        # (B, H, nr*bh, nc*bw, *rest) -> (B, H, nr, nc, bh*bw, *rest)
        t = t.unflatten(3, (nc, bw)).unflatten(2, (nr, bh))     # (B, H, nr, bh, nc, bw, ...)
        return t.transpose(3, 4).flatten(4, 5)

    has_left = nc > 1 or left is not None
    has_top = nr > 1
    w = _block_weights(gates.map(lambda _, t: blocks(t).unflatten(4, (bh, bw))),
                       has_left, has_top, need_bottom=nr > 1)
    P = bh * bw
    qb, kb, vb = blocks(q), blocks(k), blocks(v)                # (B, H, nr, nc, P, D)
    o = ((qb @ kb.transpose(-1, -2)) * w.cells[..., :P]) @ vb   # (B, H, nr, nc, P, Dv)
    # What each block's own cells send across its right and bottom borders.
    right_src = torch.einsum("...op,...pk,...pv->...okv", w.right[..., :P], kb, vb)
    bottom_src = (torch.einsum("...op,...pk,...pv->...okv", w.bottom[..., :P], kb, vb)
                  if w.bottom is not None else None)
    if not (has_left or has_top):
        right = right_src[:, :, 0, 0]                           # (B, H, bh, Dk, Dv)
    else:
        # Sequential over blocks only; the border states are all the blocks pass on.
        zeros_left = q.new_zeros(B, H, bh, Dk, Dv)
        zeros_top = q.new_zeros(B, H, bw, Dk, Dv)
        above: list[Tensor] = [zeros_top] * nc
        borders, rights = [], []
        for i in range(nr):
            into = left[:, :, i * bh:(i + 1) * bh] if left is not None else zeros_left
            for j in range(nc):
                parts = ([into] if has_left else []) + ([above[j]] if has_top else [])
                b = torch.cat(parts, 2)                          # (B, H, n_border, Dk, Dv)
                borders.append(b)
                into = right_src[:, :, i, j] + torch.einsum(
                    "...on,...nkv->...okv", w.right[:, :, i, j, :, P:], b)
                if bottom_src is not None:
                    above[j] = bottom_src[:, :, i, j] + torch.einsum(
                        "...on,...nkv->...okv", w.bottom[:, :, i, j, :, P:], b)
            rights.append(into)
        right = torch.cat(rights, 2)                            # (B, H, nr*bh, Dk, Dv)
        border = torch.stack(borders, 2).unflatten(2, (nr, nc))  # (B, H, nr, nc, n, Dk, Dv)
        # sum_n w[p, n] q_pᵀ C_n as one matmul: (w[p, n] q_p[k]) over (n, k) times C over (n, k).
        wq = (w.cells[..., P:, None] * qb[..., None, :]).flatten(-2)   # (B, H, nr, nc, P, n*Dk)
        o = o + wq @ border.flatten(-3, -2)
    o = o.unflatten(4, (bh, bw)).transpose(3, 4).flatten(4, 5).flatten(2, 3)
    return o[:, :, :R, :C], right[:, :, :R]


@dataclasses.dataclass
class _BlockWeights:
    """Scalar weights from every source of a block (its P cells, then the states entering
    its left border, then its top border) to: each cell's output (``cells`` (..., P, N)),
    each right-border edge (``right`` (..., bh, N)) and bottom-border edge (``bottom``
    (..., bw, N) or None)."""

    cells: Tensor
    right: Tensor
    bottom: Tensor | None


def _block_weights(g: GridGates, has_left: bool, has_top: bool, need_bottom: bool) -> _BlockWeights:
    """Propagate a unit impulse from every source through one block, all blocks at once.

    ``g`` holds gates of shape (..., bh, bw). Row by row: the right-going weights along a
    row are a 1-D linear recurrence (cumulative products of T_rl: one lower-triangular
    matmul), and the down-going weights feed the next row.
    """
    bh, bw = g.log_trl.shape[-2:]
    P = bh * bw
    n_left = bh if has_left else 0
    N = P + n_left + (bw if has_top else 0)
    eye = torch.eye(N, dtype=g.log_trl.dtype, device=g.log_trl.device)
    causal = torch.ones(bw, bw, dtype=torch.bool, device=eye.device).tril()
    up = eye[P + n_left:] if has_top else None                  # (bw, N): what enters from above
    cells, right = [], []
    for i in range(bh):
        own = eye[i * bw:(i + 1) * bw]                          # (bw, N): each cell's own source
        cum = g.log_trl[..., i, :].cumsum(-1)                   # (..., bw)
        carry = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, -math.inf).exp()
        u = g.src_r[..., i, :, None] * own                      # (..., bw, N)
        if up is not None and g.tru is not None:
            u = u + g.tru[..., i, :, None] * up
        r = carry @ u                                           # right-going weights (..., bw, N)
        if has_left:
            entering = eye[P + i]                               # (N,) the state entering row i
            r = r + cum.exp()[..., None] * entering
            first = entering.expand(*r.shape[:-2], 1, N)
        else:
            first = r.new_zeros(*r.shape[:-2], 1, N)
        from_left = torch.cat([first, r[..., :-1, :]], -2)     # (..., bw, N) state L at each cell
        out = g.mark_l[..., i, :, None] * from_left + g.direct[..., i, :, None] * own
        if up is not None:
            out = out + g.mark_u[..., i, :, None] * up
        cells.append(out)
        right.append(r[..., -1, :])
        if i < bh - 1 or need_bottom:
            down = g.tdl[..., i, :, None] * from_left + g.src_d[..., i, :, None] * own
            if up is not None:
                down = down + g.tdu[..., i, :, None] * up
            up = down
    return _BlockWeights(cells=torch.cat(cells, -2), right=torch.stack(right, -2),
                         bottom=up if need_bottom else None)


@register("plstm")
class PLSTM(Mixer):
    """pLSTM with a 1-D face (sequences) and a 2-D path (``grid``); see the module docstring.

    y = o_proj( mean_corners RMSNorm_per_head(o) * swish(g_proj(x)) ), o from the grid
    recurrence, with q = q_proj x Dk^-0.5, k = k_proj x, v = v_proj x and every gate a
    function of x at its own cell.
    """

    Config = PLSTMConfig
    State = PLSTMState
    example_options = {"heads": 2, "chunk_size": 5, "mode": "P"}
    cost = ("parallel O(L*C*d) time, O(L*C) memory (chunkwise, C = chunk_size); "
            "grid (R x W cells, block b) O(R*W*b*(b*d + d^2/H)) time, O(R*W*b^2) memory; "
            "step O(d^2/H); state H*Dk*Dv = d^2/H, constant in L")

    def __init__(self, dim: int, cfg: PLSTMConfig):
        super().__init__(dim, cfg)
        self.heads = cfg.heads
        self.head_dim = heads_divide(dim, cfg.heads)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        n_gates = _GATES[cfg.mode]
        self.gate_proj = nn.Linear(dim, cfg.corners * cfg.heads * n_gates)
        self.g_proj = nn.Linear(dim, dim, bias=False)
        # Heads (and corners) keep very different amounts of history: each head's output is
        # RMS-normalised on its own (as in GLA and the paper's multi-head norm).
        self.norm = RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self._init_gates()

    def _init_gates(self) -> None:
        cfg = self.cfg
        nn.init.normal_(self.gate_proj.weight, std=0.02)
        bias = torch.zeros(cfg.corners, cfg.heads, _GATES[cfg.mode])
        # Transitions start near 1 (sigmoid(3) = 0.95 .. sigmoid(6) = 0.998 across heads):
        # long reach at the start, as for a forget gate.
        keep = torch.linspace(3.0, 6.0, cfg.heads)
        if cfg.mode == "P":
            # Directions spread over the heads (the paper's linspace(-2, 2) orientation bias),
            # so that the heads propagate along different angles from the start.
            bias[..., 0] = torch.linspace(-2.0, 2.0, cfg.heads)
            bias[..., 1] = keep
        else:
            bias[..., :3] = keep[:, None]
        with torch.no_grad():
            self.gate_proj.bias.copy_(bias.flatten())

    # -- state ------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> PLSTMState:
        """Zero state ``C: (batch_size, H, Dk, Dv)``; dtype defaults to the parameters'."""
        C = torch.zeros(batch_size, self.heads, self.head_dim, self.head_dim,
                        device=self._state_device(device), dtype=self._state_dtype(dtype))
        return PLSTMState(C=C)

    def state_size(self, seq_len: int) -> int:
        return self.heads * self.head_dim * self.head_dim

    # -- 1-D faces ------------------------------------------------------------------
    def mix(self, x: Tensor, state: PLSTMState | None) -> tuple[Tensor, PLSTMState]:
        q, k, v = self._qkv(x)                                  # (B, H, T, Dh)
        gates = self._gates(self._gate_logits(x)[:, :, :1])     # corner 0: (B, H, T)
        C0, out_dtype = self._start(state, x.shape[0], q)
        row = lambda t: t.unsqueeze(2)                          # a line is a grid of one row
        o, right = plstm_grid(row(q), row(k), row(v), gates.map(lambda _, t: row(t)),
                              (1, self.cfg.chunk_size), left=C0.unsqueeze(2))
        y = self._output(o[:, :, 0].unsqueeze(1), x)            # one corner
        return y, PLSTMState(C=right[:, :, 0].to(out_dtype))

    def step_unchecked(self, x_t: Tensor, state: PLSTMState) -> tuple[Tensor, PLSTMState]:
        x = x_t.unsqueeze(1)                                    # (B, 1, D)
        q, k, v = (t[:, :, 0] for t in self._qkv(x))            # (B, H, Dh)
        g = self._gates(self._gate_logits(x)[:, :, :1]).map(lambda _, t: t[:, :, 0, None, None])
        C, out_dtype = self._start(state, x.shape[0], q)
        kv = k[..., :, None] * v[..., None, :]                  # (B, H, Dk, Dv)
        o = ((q[..., None, :] @ (g.mark_l * C + g.direct * kv)))   # (B, H, 1, Dv)
        C = g.log_trl.exp() * C + g.src_r * kv
        return self._output(o[:, None], x).squeeze(1), PLSTMState(C=C.to(out_dtype))

    # -- 2-D path -----------------------------------------------------------------
    def grid(self, x: Tensor) -> Tensor:
        """pLSTM over the 2-D grid of ``x: (B, rows, cols, dim)`` -> ``(B, rows, cols, dim)``.

        States flow right and down from the top-left corner (and, with ``corners = 4``, from
        every corner, averaged). No state is carried in or out: a grid is read whole.

        Raises:
            ValueError: ``x`` is not a floating (B, rows, cols, dim) tensor.
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[-1] != self.dim \
                or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{self.name}.grid expects a floating tensor of shape (batch, rows, "
                             f"cols, {self.dim}), got {got}"
                             + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""))
        q, k, v, gates = self.grid_terms(x)
        b = self.cfg.block
        o, _ = plstm_grid(q, k, v, gates, (b, b))
        return self.grid_output(o, x)

    def grid_terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, GridGates]:
        """The inputs of the grid scan for ``x: (B, rows, cols, dim)``: q, k (B, K*H, rows,
        cols, Dk), v and the gates, K = corners; corner c's rows are flipped so that its
        source corner is the top-left one. :meth:`grid` is ``grid_output(plstm_grid(...))``
        of these; tests put an explicit cell-by-cell scan in between instead."""
        K = self.cfg.corners
        q, k, v = self._qkv(x)                                  # (B, H, rows, cols, Dh)
        logits = self._gate_logits(x)                           # (B, rows, cols, K, H, G)
        logits = torch.stack([_flip(logits[..., c, :, :], c, 1) for c in range(K)], 3)
        qkv = [torch.cat([_flip(t, c, 2) for c in range(K)], 1) for t in (q, k, v)]
        gates = self._gates(logits.flatten(3, 4).unsqueeze(3))  # (B, K*H, rows, cols)
        return (*qkv, gates)

    def grid_output(self, o: Tensor, x: Tensor) -> Tensor:
        """Flip each corner's part of ``o: (B, K*H, rows, cols, Dv)`` back and make the
        mixer's output (B, rows, cols, dim)."""
        K = self.cfg.corners
        o = torch.stack([_flip(t, c, 2) for c, t in enumerate(o.chunk(K, 1))], 1)
        return self._output(o, x)

    # -- shared parts -------------------------------------------------------------
    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heads-first q, k, v: (B, H, *positions, Dh), in at least float32."""
        work = torch.promote_types(x.dtype, torch.float32)

        def heads(t: Tensor) -> Tensor:
            t = t.unflatten(-1, (self.heads, self.head_dim)).to(work)   # (B, *pos, H, Dh)
            return t.movedim(-2, 1)

        q = heads(self.q_proj(x)) * self.head_dim ** -0.5
        return q, heads(self.k_proj(x)), heads(self.v_proj(x))

    def _gate_logits(self, x: Tensor) -> Tensor:
        """(B, *positions, corners, H, G) gate pre-activations, in at least float32."""
        work = torch.promote_types(x.dtype, torch.float32)
        return self.gate_proj(x).to(work).unflatten(-1, (self.cfg.corners, self.heads, -1))

    def _gates(self, logits: Tensor) -> GridGates:
        """Gates (B, K*H, *positions) from logits (B, *positions, K, H, G)."""
        z = logits.flatten(-3, -2).movedim(-2, 1)               # (B, K*H, *pos, G)
        if self.cfg.mode == "P":
            direction, decay, source, mark, direct = z.unbind(-1)
            log_p, log_not_p = F.logsigmoid(direction), F.logsigmoid(-direction)
            log_lam = F.logsigmoid(decay)
            log_trl = log_lam + log_p
            s = torch.sigmoid(source)
            down = (log_lam + log_not_p).exp()
            m = torch.sigmoid(mark)
            return GridGates(log_trl=log_trl, tru=log_trl.exp(), tdl=down, tdu=down,
                             src_r=s * log_p.exp(), src_d=s * log_not_p.exp(),
                             mark_l=m, mark_u=m, direct=torch.sigmoid(direct))
        trl, tdu, tdl, src_r, src_d, mark_l, mark_u, direct = z.unbind(-1)
        return GridGates(log_trl=F.logsigmoid(trl), tru=None, tdl=torch.sigmoid(tdl),
                         tdu=torch.sigmoid(tdu), src_r=torch.sigmoid(src_r),
                         src_d=torch.sigmoid(src_d), mark_l=torch.sigmoid(mark_l),
                         mark_u=torch.sigmoid(mark_u), direct=torch.sigmoid(direct))

    def _start(self, state: PLSTMState | None, batch: int, like: Tensor
               ) -> tuple[Tensor, torch.dtype]:
        """Initial C in the compute dtype, and the dtype the returned state keeps."""
        if state is None:
            state = self.init_state(batch, device=like.device)
        return state.C.to(like.dtype), state.C.dtype

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """(B, K, H, *positions, Dv) per-corner head outputs -> (B, *positions, dim)."""
        o = self.norm(o.to(x.dtype).movedim(2, -2))             # (B, K, *pos, H, Dv)
        o = o.mean(1).flatten(-2)                               # (B, *pos, dim)
        return self.o_proj(o * F.silu(self.g_proj(x)))


def _flip(t: Tensor, corner: int, first: int) -> Tensor:
    """Flip ``t``'s rows (dim ``first``) and/or cols (``first + 1``) as corner ``corner`` needs."""
    rows, cols = _FLIPS[corner]
    dims = ([first] if rows else []) + ([first + 1] if cols else [])
    return t.flip(dims) if dims else t

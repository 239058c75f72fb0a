"""pLSTM: the block-parallel grid scan and both faces against explicit cell-by-cell loops.

The shared conformance suite (tests/mixers/test_conformance.py) covers the 1-D face's
contract (chunked == whole == step, state handling); here the 2-D path is checked against
a loop over cells in float64, the 1-D face against a loop over tokens, and the two paths
against each other (a grid of height 1 is the line).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.plstm import GridGates, plstm_grid

TOL = dict(atol=1e-10, rtol=1e-9)
DIM = 16


def reference_grid(q, k, v, g: GridGates, left=None):
    """The grid recurrence one cell at a time (row-major), states as explicit matrices.

    Returns o (B, H, rows, cols, Dv) and the right-going state leaving each row."""
    B, H, R, C, Dk = q.shape
    zero = q.new_zeros(B, H, Dk, v.shape[-1])
    right = [[None] * C for _ in range(R)]
    down = [[None] * C for _ in range(R)]
    o = torch.zeros(*v.shape, dtype=q.dtype)
    for i in range(R):
        for j in range(C):
            def gate(name):
                t = getattr(g, name)
                return 0.0 if t is None else t[:, :, i, j, None, None]
            L = right[i][j - 1] if j > 0 else (left[:, :, i] if left is not None else zero)
            U = down[i - 1][j] if i > 0 else zero
            kv = k[:, :, i, j, :, None] * v[:, :, i, j, None, :]
            right[i][j] = g.log_trl[:, :, i, j, None, None].exp() * L + gate("tru") * U \
                + gate("src_r") * kv
            down[i][j] = gate("tdl") * L + gate("tdu") * U + gate("src_d") * kv
            read = gate("mark_l") * L + gate("mark_u") * U + gate("direct") * kv
            o[:, :, i, j] = (q[:, :, i, j, None, :] @ read)[:, :, 0]
    return o, torch.stack([right[i][C - 1] for i in range(R)], 2)


def random_gates(B, H, R, C, *, turn_right: bool, seed: int = 0) -> GridGates:
    g = torch.Generator().manual_seed(seed)

    def sig():
        return torch.sigmoid(torch.randn(B, H, R, C, generator=g, dtype=torch.float64) * 2)

    return GridGates(log_trl=F.logsigmoid(torch.randn(B, H, R, C, generator=g,
                                                      dtype=torch.float64) + 2),
                     tru=sig() if turn_right else None, tdl=sig(), tdu=sig(), src_r=sig(),
                     src_d=sig(), mark_l=sig(), mark_u=sig(), direct=sig())


def make(dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    m = seqlab.mixers.build("plstm", dim=DIM, heads=2, **options).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


# -- the grid scan itself -----------------------------------------------------------------

@pytest.mark.parametrize("block", [(1, 1), (2, 3), (3, 2), (4, 4), (8, 8)],
                         ids=lambda b: f"block{b[0]}x{b[1]}")
@pytest.mark.parametrize("turn_right", [True, False], ids=["tru", "no-tru"])
@pytest.mark.parametrize("with_left", [False, True], ids=["fresh", "left-state"])
def test_grid_scan_equals_cell_by_cell(block, turn_right, with_left):
    B, H, R, C, Dk, Dv = 2, 3, 5, 7, 4, 3
    torch.manual_seed(1)
    q, k = (torch.randn(B, H, R, C, Dk, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, R, C, Dv, dtype=torch.float64)
    g = random_gates(B, H, R, C, turn_right=turn_right)
    left = torch.randn(B, H, R, Dk, Dv, dtype=torch.float64) if with_left else None
    o, right = plstm_grid(q, k, v, g, block, left=left)
    o_ref, right_ref = reference_grid(q, k, v, g, left)
    torch.testing.assert_close(o, o_ref, **TOL)
    torch.testing.assert_close(right, right_ref, **TOL)


def _unit_inputs(R, C):
    """q = v = 1 (Dk = Dv = 1) everywhere and k = 1 at the top-left cell only."""
    q = torch.ones(1, 1, R, C, 1, dtype=torch.float64)
    k = torch.zeros_like(q)
    k[:, :, 0, 0] = 1
    return q, k, q.clone()


def test_d_mode_reaches_the_quadrant_undecayed():
    """D-mode has one path between two cells: with every gate 1, a source at (0, 0) reaches
    each cell of its quadrant with weight exactly 1, however far (no path-count blow-up)."""
    R, C = 6, 9
    q, k, v = _unit_inputs(R, C)
    one = torch.ones(1, 1, R, C, dtype=torch.float64)
    g = GridGates(log_trl=one * 0, tru=None, tdl=one, tdu=one, src_r=one, src_d=one,
                  mark_l=one, mark_u=one, direct=one * 0)
    o, _ = plstm_grid(q, k, v, g, (4, 4))
    expected = torch.ones(R, C, dtype=torch.float64)
    expected[0, 0] = 0                                         # direct gate 0 at the source
    torch.testing.assert_close(o[0, 0, :, :, 0], expected, **TOL)
    # With T_ru = 1 as well, the weights would count the paths: binomial, exploding.
    o2, _ = plstm_grid(q, k, v, dataclasses.replace(g, tru=one), (4, 4))
    assert o2[0, 0, -1, -1, 0] > 1000


def test_p_mode_conserves_mass_along_antidiagonals():
    """P-mode with decay 1: the mass a source sends out splits between right and down
    (shares p and 1 - p), so the cells n steps away receive exactly 1 in total, while the
    direction shares vary from cell to cell."""
    R, C = 7, 7
    q, k, v = _unit_inputs(R, C)
    p = torch.sigmoid(torch.randn(1, 1, R, C, generator=torch.Generator().manual_seed(3),
                                  dtype=torch.float64))
    one = torch.ones_like(p)
    g = GridGates(log_trl=p.log(), tru=p, tdl=1 - p, tdu=1 - p, src_r=p, src_d=1 - p,
                  mark_l=one, mark_u=one, direct=one * 0)
    o = plstm_grid(q, k, v, g, (3, 3))[0][0, 0, :, :, 0]      # (R, C)
    for n in range(1, R):                                      # diagonals that fit the grid
        mass = sum(o[i, n - i] for i in range(n + 1))
        torch.testing.assert_close(mass, torch.tensor(1.0, dtype=torch.float64), **TOL)


# -- the mixer's 2-D path --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("corners", [1, 4])
def test_grid_path_equals_cell_by_cell(mode, corners):
    m = make(mode=mode, corners=corners, block=3)
    x = torch.randn(2, 5, 4, DIM, dtype=torch.float64)
    q, k, v, gates = m.grid_terms(x)
    y_ref = m.grid_output(reference_grid(q, k, v, gates)[0], x)
    torch.testing.assert_close(m.grid(x), y_ref, **TOL)


@pytest.mark.parametrize("mode", ["P", "D"])
def test_four_corners_are_the_flipped_grids(mode):
    """With every corner's gates equal to corner 0's, the 4-corner output is the mean of the
    1-corner mixer run on the grid flipped four ways (and flipped back)."""
    m4 = make(mode=mode, corners=4, block=2)
    m1 = seqlab.mixers.build("plstm", dim=DIM, heads=2, mode=mode, block=2).double()
    with torch.no_grad():
        n = m1.gate_proj.out_features
        for c in range(4):
            m4.gate_proj.weight[c * n:(c + 1) * n] = m4.gate_proj.weight[:n]
            m4.gate_proj.bias[c * n:(c + 1) * n] = m4.gate_proj.bias[:n]
        state = {k: v[:n] if k.startswith("gate_proj") else v for k, v in m4.state_dict().items()}
        m1.load_state_dict(state)
    x = torch.randn(2, 5, 6, DIM, dtype=torch.float64)
    flips = [[], [2], [1], [1, 2]]
    expected = sum(m1.grid(x.flip(f)).flip(f) for f in flips) / 4
    torch.testing.assert_close(m4.grid(x), expected, **TOL)


def test_grid_is_causal_towards_the_bottom_right():
    """Corner 0: a cell sees exactly the cells above and to its left (itself included)."""
    m = make(mode="P", block=3)
    x = torch.randn(1, 6, 7, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 2, 3] += 1.0
    changed = (m.grid(x2) - m.grid(x)).abs().amax(-1)[0] > 1e-12
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
    assert torch.equal(changed, (rows >= 2) & (cols >= 3))


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("block", [2, 8])
def test_height_one_grid_equals_the_1d_face(mode, block):
    m = make(mode=mode, chunk_size=4, block=block)
    x = torch.randn(3, 11, DIM, dtype=torch.float64)
    y, _ = m(x)
    torch.testing.assert_close(m.grid(x[:, None])[:, 0], y, **TOL)


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("corners", [1, 4])
def test_1d_face_equals_token_by_token_reference(mode, corners):
    """C_t = T_rl C_{t-1} + S_r k vᵀ;  y_t = qᵀ (M_l C_{t-1} + D k vᵀ), from a nonzero state;
    with four corners the line is read by corner 0 alone."""
    m = make(mode=mode, corners=corners, chunk_size=3)
    x = torch.randn(2, 10, DIM, dtype=torch.float64)
    _, s = m(torch.randn(2, 4, DIM, dtype=torch.float64))
    y, s_end = m(x, s)

    q, k, v, g = m.grid_terms(x[:, None])                      # a 1 x T grid
    H = m.heads
    C, outs = s.C, []
    for t in range(x.shape[1]):
        def gate(name):
            return getattr(g, name)[:, :H, 0, t, None, None]   # corner 0's lanes
        kv = k[:, :H, 0, t, :, None] * v[:, :H, 0, t, None, :]
        outs.append((q[:, :H, 0, t, None, :] @ (gate("mark_l") * C + gate("direct") * kv))[:, :, 0])
        C = gate("log_trl").exp() * C + gate("src_r") * kv
    o = torch.stack(outs, 2)[:, :, None]                       # (B, H, 1, T, Dv)
    y_ref = m._output(o[:, None], x[:, None])[:, 0]
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s_end.C, C, **TOL)


def test_grid_gradients_reach_every_parameter():
    m = make(dtype=torch.float32, mode="P", corners=4, block=4)
    x = torch.randn(2, 9, 10, DIM, requires_grad=True)
    y = m.grid(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_grid_float32_close_to_float64():
    m64 = make(mode="D", corners=4, block=4)
    m32 = make(mode="D", corners=4, block=4).float()
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = torch.randn(2, 12, 12, DIM, dtype=torch.float64)
    torch.testing.assert_close(m32.grid(x.float()).double(), m64.grid(x), atol=1e-4, rtol=1e-3)


def test_bad_grid_input_is_named():
    m = make()
    with pytest.raises(ValueError, match=r"\(batch, rows, cols, 16\)"):
        m.grid(torch.randn(2, 5, DIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        m.grid(torch.ones(1, 2, 2, DIM, dtype=torch.long))


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="corners"):
        seqlab.mixers.build("plstm", dim=DIM, corners=2)
    with pytest.raises(ConfigError, match="mode"):
        seqlab.mixers.build("plstm", dim=DIM, mode="Q")

"""atlas: the Omega rule against a per-token reference written from the paper.

The reference below takes each token's gradient of the windowed loss with torch.func
(not the mixer's hand-written backprop), steps the memory token by token and reads it
out; ``chunk = 1`` is the exact per-token Omega rule, and larger chunks take the gradients
of a chunk at the memory its start. The shared conformance suite covers the
``example_options``; these tests cover every memory, optimizer and feature map.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode

import seqlab
from seqlab.config import ConfigError

DIM, HEADS, B, T = 16, 2, 2, 13
TOL = dict(atol=1e-9, rtol=1e-9)
VARIANTS = [
    pytest.param("mlp", "momentum", 2, id="mlp-momentum-poly2"),
    pytest.param("mlp", "gd", 0, id="mlp-gd"),
    pytest.param("linear", "momentum", 1, id="linear-momentum-poly1"),
    pytest.param("mlp", "muon", 1, id="mlp-muon-poly1"),
]


def make(dtype=torch.float64, **options):
    options = {"heads": HEADS, "window": 3, "chunk": 1, **options}
    m = seqlab.mixers.build("atlas", dim=DIM, **options).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def newton_schulz(x, steps=5):
    """Muon's quintic iteration (Jordan et al. 2024), on the last two dims."""
    tall = x.shape[-2] > x.shape[-1]
    x = x.mT if tall else x
    x = x / torch.sqrt(x.pow(2).sum((-2, -1), keepdim=True) + 1e-14)
    for _ in range(steps):
        a = x @ x.mT
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.mT if tall else x


def memory_shapes(cfg, Dh):
    F_ = sum(Dh ** i for i in range(cfg.poly_degree + 1)) if cfg.poly_degree else Dh
    E = cfg.expansion * Dh
    shapes = {"W0": (Dh, F_)}
    if cfg.memory == "mlp":
        shapes.update(W1=(E, F_), W2=(Dh, E))
    return shapes


def unpack(flat, shapes):
    """(..., P) -> {name: (..., out, in)} in the documented order W0, W1, W2."""
    out, at = {}, 0
    for name, (o, i) in shapes.items():
        out[name] = flat[..., at:at + o * i].unflatten(-1, (o, i))
        at += o * i
    return out


def reference(m, x):
    """The recurrence of the module docstring, token by token, returns (y, memory (B, H, P))."""
    cfg = m.cfg
    Bx, Tx, D = x.shape
    H, Dh, w, C = cfg.heads, D // cfg.heads, cfg.window, cfg.chunk
    R = Bx * H                                                     # (batch, head) rows

    def rows(t):                                                   # (B, T, H*Dh) -> (R, T, Dh)
        return t.view(Bx, Tx, H, -1).transpose(1, 2).reshape(R, Tx, -1)

    q, k, v = rows(m.q_proj(x)), rows(m.k_proj(x)), rows(m.v_proj(x))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    names = ["alpha", "eta", "gamma"] + ([] if cfg.optimizer == "gd" else ["theta"])
    raw = m.gate_proj(x).view(Bx, Tx, len(names), H).permute(2, 0, 3, 1).reshape(len(names), R, Tx)
    g = dict(zip(names, torch.sigmoid(raw)))
    alpha, gamma, eta = g["alpha"], g["gamma"], cfg.lr * g["eta"] / (w * C)

    def phi(z):
        if not cfg.poly_degree:
            return z
        a = m.poly_coef / m.poly_coef.norm()
        feats, power = [a[0] * torch.ones_like(z[..., :1])], z
        for i in range(1, cfg.poly_degree + 1):
            if i > 1:
                power = torch.einsum("...i,...j->...ij", power, z).flatten(-2)
            feats.append(a[i] * power)
        return torch.cat(feats, -1)

    def memory(W, u):                                              # M(u), one row
        y = W["W0"] @ u
        if "W1" in W:
            y = y + W["W2"] @ F.silu(W["W1"] @ u)
        return y

    def window_loss(W, U, V, G):                                   # Σ_i γ_i ||M(u_i) - v_i||²
        return sum(G[i] * (memory(W, U[i]) - V[i]).pow(2).sum() for i in range(U.shape[0]))

    omega_grad = vmap(grad(window_loss))
    u, u_q = phi(k), phi(q)
    shapes = memory_shapes(cfg, Dh)
    M = unpack(m.memory_init.expand(Bx, H, -1).reshape(R, -1), shapes)
    S = {n: torch.zeros_like(W) for n, W in M.items()}
    start, ys = M, []
    for t in range(Tx):
        if t % C == 0:
            start = M                                              # this chunk's gradients use it
        lo = max(0, t - w + 1)
        g_t = omega_grad(start, u[:, lo:t + 1], v[:, lo:t + 1], gamma[:, lo:t + 1])
        if cfg.optimizer == "gd":
            step = g_t
        else:
            theta = g["theta"][:, t, None, None]
            inflow = 1 - theta if cfg.dampen else 1
            S = {n: theta * S[n] + inflow * g_t[n] for n in S}
            step = S if cfg.optimizer == "momentum" else {n: newton_schulz(s) for n, s in S.items()}
        M = {n: alpha[:, t, None, None] * M[n] - eta[:, t, None, None] * step[n] for n in M}
        ys.append(vmap(memory)(M, u_q[:, t]))
    o = torch.stack(ys, 1).view(Bx, H, Tx, Dh)
    flat = torch.cat([M[n].flatten(-2) for n in shapes], -1).view(Bx, H, -1)
    return head_output(m, o, x), flat


def head_output(m, o, x):
    """(B, H, T, Dv) read-outs -> y: per-head RMS norm, swish output gate, o_proj."""
    Bx, Tx, D = x.shape
    o = o.transpose(1, 2)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.norm.eps) * m.norm.weight
    return m.o_proj(o.reshape(Bx, Tx, D) * F.silu(m.g_proj(x)))


def steps(m, x, state=None):
    state = m.init_state(x.shape[0], dtype=x.dtype) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y_t, state = m.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


def assert_faces_match_reference(m):
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y_ref, mem_ref = reference(m, x)
    y, s = m(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.memory, mem_ref, **TOL)
    y_step, s_step = steps(m, x)
    torch.testing.assert_close(y_step, y_ref, **TOL)
    torch.testing.assert_close(s_step.memory, mem_ref, **TOL)


@pytest.mark.parametrize("memory, optimizer, degree", VARIANTS)
def test_chunk1_is_the_per_token_omega_rule(memory, optimizer, degree):
    assert_faces_match_reference(make(memory=memory, optimizer=optimizer, poly_degree=degree,
                                      chunk=1))


@pytest.mark.parametrize("memory, optimizer, degree", VARIANTS)
@pytest.mark.parametrize("chunk, window", [(4, 3), (3, 5)], ids=["C4-w3", "C3-w5"])
def test_chunked_model_parallel_equals_step_and_reference(memory, optimizer, degree, chunk, window):
    """chunk > 1: gradients at the chunk-start memory, the same in every face and call split."""
    m = make(memory=memory, optimizer=optimizer, poly_degree=degree, chunk=chunk, window=window)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, s = m(x)
    y_ref, mem_ref = reference(m, x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.memory, mem_ref, **TOL)
    y_step, s_step = steps(m, x)
    torch.testing.assert_close(y_step, y, **TOL)
    assert s_step.phase == s.phase == T % chunk
    for a, b in zip((s.start, s.memory, s.keys, s.values, s.gammas),
                    (s_step.start, s_step.memory, s_step.keys, s_step.values, s_step.gammas)):
        torch.testing.assert_close(a, b, **TOL)
    # Calls that split chunks anywhere continue the same computation.
    ys, st = [], None
    for lo, hi in [(0, 2), (2, 7), (7, 8), (8, 13)]:
        y_c, st = m(x[:, lo:hi], st)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y, **TOL)
    torch.testing.assert_close(st.memory, s.memory, **TOL)


def test_chunk_is_part_of_the_model():
    """The same weights with chunk 1 and chunk 4 are different models (after the first chunk)."""
    m1 = make(chunk=1)
    m4 = make(chunk=4)
    m4.load_state_dict(m1.state_dict())
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y1, _ = m1(x)
    y4, _ = m4(x)
    assert (y1[:, 1:] - y4[:, 1:]).abs().max() > 1e-6


def test_window1_linear_memory_is_the_gated_delta_rule():
    """w = 1, matrix memory, GD: W_t = α_t W_{t-1} - 2 η_t γ_t (W_{t-1} k_t - v_t) k_tᵀ."""
    m = make(memory="linear", optimizer="gd", poly_degree=0, window=1, chunk=1)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    Dh = DIM // HEADS
    q = F.normalize(m.q_proj(x).view(B, T, HEADS, Dh), dim=-1)
    k = F.normalize(m.k_proj(x).view(B, T, HEADS, Dh), dim=-1)
    v = m.v_proj(x).view(B, T, HEADS, Dh)
    alpha, eta, gamma = torch.sigmoid(m.gate_proj(x).view(B, T, 3, HEADS)).unbind(2)
    eta = m.cfg.lr * eta                                           # / (window * chunk) = / 1
    W = m.memory_init.view(HEADS, Dh, Dh).expand(B, -1, -1, -1)    # (B, H, Dv, Dk)
    outs = []
    for t in range(T):
        beta = (2 * eta[:, t] * gamma[:, t])[..., None, None]
        err = torch.einsum("bhvk,bhk->bhv", W, k[:, t]) - v[:, t]
        W = alpha[:, t, :, None, None] * W - beta * torch.einsum("bhv,bhk->bhvk", err, k[:, t])
        outs.append(torch.einsum("bhvk,bhk->bhv", W, q[:, t]))
    y_ref = head_output(m, torch.stack(outs, 2), x)
    y, s = m(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(s.memory, W.flatten(-2), **TOL)
    assert s.keys.shape == (B, HEADS, 0, Dh) and s.momentum is None


@pytest.mark.parametrize("memory, optimizer, degree", VARIANTS)
def test_gradients_finite_and_reach_every_parameter(memory, optimizer, degree):
    m = make(torch.float32, memory=memory, optimizer=optimizer, poly_degree=degree,
             chunk=8, window=4)
    x = torch.randn(B, 64, DIM, requires_grad=True)
    y, s = m(x)
    y2, _ = m(torch.randn(B, 5, DIM), s)                          # through a carried state too
    (y.pow(2).sum() + y2.sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("options", [{}, {"poly_degree": 2}, {"chunk": 64}, {"window": 16},
                                     {"optimizer": "muon"}, {"memory": "linear", "chunk": 1}],
                         ids=["default", "poly2", "C64", "w16", "muon", "linear-C1"])
def test_default_init_stays_bounded_on_long_inputs(options):
    """lr is relative to the largest stable step (/ window * chunk): no blow-up at init."""
    m = seqlab.mixers.build("atlas", dim=32, **options)
    with torch.no_grad():
        y, s = m(torch.randn(1, 512, 32))
    assert torch.isfinite(y).all()
    assert s.memory.abs().max() < 10


@pytest.mark.parametrize("chunk", [1, 4])
def test_undampened_momentum_matches_reference(chunk):
    """dampen=False is the paper's S_t = θ S + g, in every face."""
    assert_faces_match_reference(make(memory="mlp", optimizer="momentum", chunk=chunk,
                                      dampen=False))


def test_dampened_momentum_stays_stable_where_plain_momentum_diverges():
    """With θ = 0.88 (what training drove it towards on MQAR) and η, γ near their largest,
    S = θ S + g steps up to 1/(1 - θ) times further than gd and the memory blows up; the
    dampened momentum's step is never longer than gd's, which ``lr`` keeps stable."""
    def final_memory(dampen):
        torch.manual_seed(0)
        m = seqlab.mixers.build("atlas", dim=32, dampen=dampen)
        with torch.no_grad():
            bias = m.gate_proj.bias.view(len(m.gates), m.heads)
            for gate, value in {"theta": 2.0, "eta": 4.0, "gamma": 4.0}.items():
                bias[m.gates.index(gate)] = value
            y, s = m(torch.randn(1, 512, 32))
        return y, s.memory

    y, memory = final_memory(True)
    assert torch.isfinite(y).all() and memory.abs().max() < 10
    _, memory = final_memory(False)
    assert not (memory.abs().max() < 1e3)                          # inf or NaN count as blown up


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_parallel_face_forms_no_per_token_weights():
    """gd / momentum: no tensor holds a memory per token (L * P), nor grows faster than L."""
    m = seqlab.mixers.build("atlas", dim=16, heads=2, chunk=16, window=4)
    P = m.memory_numel
    largest = {}
    for L in (256, 1024):
        x = torch.randn(1, L, 16, requires_grad=True)
        with _LargestTensor() as mode:
            y, _ = m(x)
            y.sum().backward()
        largest[L] = mode.largest
    assert largest[1024] <= 4 * largest[256]
    assert largest[1024] < 1024 * P * 2 / 16


def test_state_size_and_cost():
    m = seqlab.mixers.build("atlas", dim=64, heads=4, window=4, memory="mlp", expansion=2)
    P = 16 * 16 + 32 * 16 + 16 * 32
    assert m.memory_numel == P
    assert m.state_size(1) == m.state_size(10_000) == 4 * (3 * P + 3 * (2 * 16 + 1))
    s = m.init_state(3)
    assert s.memory.shape == s.start.shape == s.momentum.shape == (3, 4, P)
    assert s.keys.shape == (3, 4, 3, 16) and s.gammas.shape == (3, 4, 3) and s.phase == 0
    gd = seqlab.mixers.build("atlas", dim=64, heads=4, window=1, memory="linear", optimizer="gd",
                             poly_degree=2)
    assert gd.state_size(5) == 4 * 2 * 16 * (1 + 16 + 256)
    assert "step" in type(m).cost and "state" in type(m).cost


def test_option_errors_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"dim = 32 does not divide into heads = 5"):
        seqlab.mixers.build("atlas", dim=32, heads=5)
    with pytest.raises(ConfigError, match=r"memory = 'deep' .*'linear', 'mlp'"):
        seqlab.mixers.build("atlas", dim=32, memory="deep")
    with pytest.raises(ConfigError, match=r"optimizer = 'adam' .*'gd', 'momentum', 'muon'"):
        seqlab.mixers.build("atlas", dim=32, optimizer="adam")
    with pytest.raises(ConfigError, match=r"poly_degree = 5 is not allowed: expected an int"):
        seqlab.mixers.build("atlas", dim=32, poly_degree=5)
    for field in ("window", "chunk", "expansion"):
        with pytest.raises(ConfigError, match=rf"{field} = 0 is not allowed: expected a positive"):
            seqlab.mixers.build("atlas", dim=32, **{field: 0})
    with pytest.raises(ConfigError, match=r"lr = -1.0 is not allowed"):
        seqlab.mixers.build("atlas", dim=32, lr=-1)

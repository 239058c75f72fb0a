"""ATLAS: a deep memory trained at test time by the Omega rule (a sliding-window loss).

Paper: Behrouz et al. 2025, "ATLAS: Learning to Optimally Memorize the Context at Test
Time", https://arxiv.org/abs/2505.23735 (OmegaNet = the Omega rule with gradient descent,
ATLAS = the Omega rule with Muon). Per head, with the memory M a small network of weights:

    g_t = ∇_M Σ_{i=t-w+1..t} γ_i ||M(φ(k_i)) - v_i||²   evaluated at M = M_{s(t)}
    S_t = θ_t S_{t-1} + (1 - θ_t) g_t;   M_t = α_t M_{t-1} - η_t S_t   (NS5(S_t) for Muon;
    g_t for GD; ``dampen=False`` drops the (1 - θ_t))
    y_t = M_t(φ(q_t))

**Chunks are part of the model.** s(t) = C * floor(t / C) - 1: every token of an aligned chunk
of C absolute positions takes its gradient at the memory left by the previous chunk, as the
paper's (and Titans') chunk-wise parallel training does. That is a different model from
per-token gradients, so ``chunk`` is fixed by the config and the state carries what the
recurrence needs to reproduce it token by token: the chunk-start memory, the current
memory, the momentum, the phase t mod C and the last w - 1 keys/values/γ. ``chunk = 1``
is the exact per-token Omega rule; larger chunks trade that for parallel work.

Within a chunk the gradients are all taken at one memory, so each layer's gradient of token
i is one outer product a_i b_iᵀ, and M_t is the chunk's starting memory plus decayed sums
of those outer products. The parallel face (``gd``, ``momentum``) never forms per-token
weights: M_t x = Q_t M x - c_t S x - Σ_i Z_ti a_i (b_i · x), attention-like over the C
tokens of the chunk and the w - 1 before it. ``muon`` orthogonalises each S_t
(Newton-Schulz), which is not linear, so it forms the C per-token momenta of a chunk.

Example:
    >>> m = seqlab.mixers.build("atlas", dim=64, heads=4, window=4, chunk=8, poly_degree=2)
    >>> y, s = m(torch.randn(2, 100, 64))      # s.memory: (2, 4, P), P memory weights per head
    >>> y_t, s = m.step(torch.randn(2, 64), s)
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

# Quintic Newton-Schulz coefficients of Muon (Jordan et al. 2024): five steps push every
# singular value of the normalised momentum into about [0.7, 1.2]; ATLAS uses the same map.
_NS_COEF = (3.4445, -4.7750, 2.0315)
_NS_STEPS = 5
_MAX_DEGREE = 4

Weights = list[Tensor]          # the memory's matrices [W0, (W1, W2)], each (..., out, in)


@dataclasses.dataclass(frozen=True)
class AtlasConfig(Config):
    """Options of the ``atlas`` mixer.

    Attributes:
        heads: number of heads; must divide ``dim`` (Dk = Dv = dim // heads).
        memory: "linear" (M(u) = W0 u, a matrix memory) or "mlp" (the deep memory
            M(u) = W0 u + W2 silu(W1 u); its residual branch is a learned matrix because
            φ changes the width, so the identity would not fit).
        expansion: hidden width of the "mlp" memory, E = expansion * Dv.
        poly_degree: 0 for φ(k) = k; p >= 1 for the polynomial feature map
            φ(k) = [a_0, a_1 k, a_2 k⊗k, ..., a_p k^⊗p] (the paper's polynomial kernel), width
            F = Σ_i Dk^i, with learned a_i started at 1/sqrt(i!) (the Taylor features of
            exp(qᵀk)), divided by sqrt(Σ a_i²) so that unit keys give unit features.
            Capacity grows as Dk^p, and so do the memory's weights.
        window: w, tokens in the Omega rule's loss (1: the delta rule / Titans' update).
        chunk: C, the model's chunk of absolute positions whose gradients share one memory
            (see the module docstring); 1 is the exact per-token rule. Changes the model.
        optimizer: the memory's inner optimizer: "gd" (M_t = α M - η g), "momentum"
            (S_t = θ S + (1 - θ) g; M_t = α M - η S) or "muon" (M_t = α M - η NS5(S_t), ATLAS).
        dampen: scale the gradient entering the momentum by (1 - θ_t), so that a momentum
            step is never longer than the gd step that ``lr`` keeps stable. Without it
            (S_t = θ S + g, the paper's form with η outside) a step can be 1/(1 - θ) times
            longer, and the memory of the default model diverged on MQAR once training had
            pushed θ to 0.8 (a non-finite gradient at step 103, docs/results.md). Only for
            "momentum" and "muon".
        lr: the inner learning rate as a fraction of the largest stable one:
            η_t = lr * sigmoid(W_η x_t) / (window * chunk) (see ``Atlas.__init__``).
    """

    heads: int = 4
    memory: Literal["linear", "mlp"] = "mlp"
    expansion: int = 2
    poly_degree: int = 0
    window: int = 4
    chunk: int = 16
    optimizer: Literal["gd", "momentum", "muon"] = "momentum"
    lr: float = 1.0
    dampen: bool = True

    def validate(self) -> None:
        require(self.heads >= 1, self, "heads", "a positive int")
        require(self.expansion >= 1, self, "expansion", "a positive int")
        require(0 <= self.poly_degree <= _MAX_DEGREE, self, "poly_degree",
                f"an int from 0 (no feature map) to {_MAX_DEGREE}")
        require(self.window >= 1, self, "window", "a positive int")
        require(self.chunk >= 1, self, "chunk", "a positive int")
        require(math.isfinite(self.lr) and self.lr > 0, self, "lr", "a positive finite number")


@dataclasses.dataclass(frozen=True)
class AtlasState(State):
    """The recurrent state of ``atlas``; the memory's matrices are packed per head.

    Attributes:
        start: (B, H, P) the memory at the start of the current chunk, where this chunk's
            gradients are taken (equal to ``memory`` when ``phase`` is 0).
        memory: (B, H, P) the memory after the last token, M_{t-1}.
        momentum: (B, H, P) S_{t-1}, or None for ``optimizer="gd"``.
        keys: (B, H, w-1, Dk) the last w - 1 normalised keys, oldest first (zeros before
            the sequence start, where ``gammas`` is 0 so they add nothing).
        values: (B, H, w-1, Dv) their values.
        gammas: (B, H, w-1) their loss weights γ.
        phase: tokens seen modulo ``chunk`` (the same for every row).
    """

    start: Tensor
    memory: Tensor
    momentum: Tensor | None
    keys: Tensor
    values: Tensor
    gammas: Tensor
    phase: int = 0


def newton_schulz(x: Tensor, steps: int = _NS_STEPS, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise the last two dims of ``x`` (Muon's quintic iteration).

    The Frobenius normalisation is an rsqrt of the squared sum plus eps so that a zero
    momentum maps to zero with a finite gradient (``Tensor.norm`` has none at 0).
    """
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x * torch.rsqrt(x.pow(2).sum((-2, -1), keepdim=True) + eps * eps)
    a, b, c = _NS_COEF
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def _silu_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _decay(log_gate: Tensor) -> tuple[Tensor, Tensor]:
    """For gates g_j = exp(log_gate_j) of a segment: (L, P) with L_jl = Π_{l<r<=j} g_r
    for l <= j (else 0) and P_j = Π_{r<=j} g_r. All exponents are <= 0."""
    n = log_gate.shape[-1]
    cum = log_gate.cumsum(-1)                                   # (B, H, n)
    tril = torch.ones(n, n, dtype=torch.bool, device=cum.device).tril()
    diff = cum[..., :, None] - cum[..., None, :]                # (B, H, n, n)
    return diff.masked_fill(~tril, -math.inf).exp(), cum.exp()


def _band(n: int, w: int, like: Tensor) -> Tensor:
    """(n, n + w - 1): row j sums the window of segment token j, i.e. the columns
    j .. j + w - 1 of [w - 1 earlier tokens, n segment tokens]."""
    j = torch.arange(n, device=like.device)[:, None]
    i = torch.arange(n + w - 1, device=like.device)[None, :]
    return ((i >= j) & (i <= j + w - 1)).to(like.dtype)


@register("atlas")
class Atlas(Mixer):
    """ATLAS / OmegaNet: per head a memory network fitted at test time to a sliding window.

    y = o_proj( RMSNorm_per_head(o) * swish(g_proj x) ), o_t = M_t(φ(q_t)) from the
    recurrence in the module docstring with q, k = l2-normalised projections of x,
    v = v_proj x, and per-token, per-head gates from one projection of x:
    α_t = sigmoid(.) (forgetting / weight decay), η_t = lr sigmoid(.) / (w C) (learning rate),
    γ_t = sigmoid(.) (the token's weight in every window it belongs to), θ_t = sigmoid(.)
    (momentum; not for "gd"). The memory's starting weights are learned (``memory_init``).
    """

    Config = AtlasConfig
    State = AtlasState
    example_options = {"heads": 4, "window": 3, "chunk": 4, "poly_degree": 2,
                       "memory": "mlp", "optimizer": "momentum"}
    cost = ("parallel O(L*(P + (C+w)*(F+E))) time per head, O(L*(C+w) + L*P/C) memory (P memory "
            "weights, F = width of phi, E = hidden; muon: O(L*P) memory and NS work); "
            "step O(w*P) per head; state H*(2 or 3)*P + H*(w-1)*(2*Dh+1), constant in L")
    # Weight decay pulls the learned starting memory toward zero, where the MLP memory's
    # gradient vanishes (silu(0) = 0 cuts both of its layers): exempt it.
    no_weight_decay = ("memory_init",)

    _GATES = ("alpha", "eta", "gamma", "theta")

    def __init__(self, dim: int, cfg: AtlasConfig):
        super().__init__(dim, cfg)
        H = self.heads = cfg.heads
        Dh = self.head_dim = heads_divide(dim, cfg.heads)
        p = cfg.poly_degree
        self.feature_dim = sum(Dh ** i for i in range(p + 1)) if p else Dh
        Fd, E = self.feature_dim, cfg.expansion * Dh
        # (out, in) of W0 [, W1, W2]: the layout of the packed memory, per head.
        self.memory_shapes: tuple[tuple[int, int], ...] = (
            ((Dh, Fd),) if cfg.memory == "linear" else ((Dh, Fd), (E, Fd), (Dh, E)))
        self.memory_numel = sum(o * i for o, i in self.memory_shapes)
        self.gates = self._GATES if cfg.optimizer != "gd" else self._GATES[:3]
        # η_t = lr sigmoid(.) / (w C). Features have unit norm, and the C gradients of a chunk
        # are all taken at one memory, so a chunk's summed GD step sees the curvature of C
        # windows of w tokens, at most 2 C w; lr <= 1 keeps it stable for any w and C
        # (with / w alone, lr = 0.5 NaN'd the default model within 512 tokens at init).
        self._lr = cfg.lr / (cfg.window * cfg.chunk)

        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.gate_proj = nn.Linear(dim, len(self.gates) * H)
        with torch.no_grad():
            # Start at α = 0.993 (slow forgetting), η, γ, θ = 1/2 of their range. With
            # γ = θ = 0.88 (bias 2), the default model NaN'd within 512 tokens at init.
            bias = {"alpha": 5.0, "eta": 0.0, "gamma": 0.0, "theta": 0.0}
            start = torch.tensor([bias[g] for g in self.gates])
            self.gate_proj.bias.copy_(start.repeat_interleave(H))
            self.gate_proj.weight.mul_(0.1)
        if p:
            self.poly_coef = nn.Parameter(torch.tensor(
                [1 / math.sqrt(math.factorial(i)) for i in range(p + 1)]))
        # Learned starting memory: W0 = 0 (an empty matrix memory), W1 random so that
        # silu(W1 u) is not stuck at 0, W2 = 0 (the MLP branch starts silent).
        init = [torch.zeros(H, o, i) for o, i in self.memory_shapes]
        if cfg.memory == "mlp":
            init[1] = torch.randn(H, E, Fd) / math.sqrt(Fd)
        self.memory_init = nn.Parameter(torch.cat([w.flatten(1) for w in init], 1))   # (H, P)
        self.g_proj = nn.Linear(dim, dim, bias=False)
        self.norm = RMSNorm(Dh)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    # -- state ------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> AtlasState:
        """The learned starting memory for every row, zero momentum and an empty window."""
        device, dtype = self._state_device(device), self._state_dtype(dtype)
        H, Dh, w = self.heads, self.head_dim, self.cfg.window
        memory = self.memory_init.to(device=device, dtype=dtype).expand(batch_size, H, -1)
        momentum = None if self.cfg.optimizer == "gd" else torch.zeros_like(memory)
        zeros = dict(device=device, dtype=dtype)
        return AtlasState(start=memory.clone(), memory=memory.clone(), momentum=momentum,
                          keys=torch.zeros(batch_size, H, w - 1, Dh, **zeros),
                          values=torch.zeros(batch_size, H, w - 1, Dh, **zeros),
                          gammas=torch.zeros(batch_size, H, w - 1, **zeros))

    def state_size(self, seq_len: int) -> int:
        copies = 2 if self.cfg.optimizer == "gd" else 3
        return self.heads * (copies * self.memory_numel
                             + (self.cfg.window - 1) * (2 * self.head_dim + 1))

    # -- faces ------------------------------------------------------------------
    def mix(self, x: Tensor, state: AtlasState | None) -> tuple[Tensor, AtlasState]:
        B, T, _ = x.shape
        if state is None:
            state = self.init_state(B, device=x.device)
        out_dtype = state.memory.dtype
        q, k, v, gates = self._project(x)                       # (B, H, T, Dh), gates (B, H, T)
        work = q.dtype
        w, C = self.cfg.window, self.cfg.chunk
        keys = torch.cat([state.keys.to(work), k], 2)           # (B, H, w-1+T, Dh)
        values = torch.cat([state.values.to(work), v], 2)
        gammas = torch.cat([state.gammas.to(work), gates["gamma"]], 2)
        u, u_q = self._features(keys), self._features(q)        # (B, H, w-1+T, F), (B, H, T, F)
        start, mem = self._unpack(state.start.to(work)), self._unpack(state.memory.to(work))
        mom = None if state.momentum is None else self._unpack(state.momentum.to(work))
        ys, pos, phase = [], 0, state.phase
        # Segments end at chunk boundaries of absolute positions (or at the end of x).
        while pos < T:
            n = min(T - pos, C - phase)
            seg, ext = slice(pos, pos + n), slice(pos, pos + w - 1 + n)
            y, mem, mom = self._segment(
                start, mem, mom, u[:, :, ext], values[:, :, ext], gammas[:, :, ext], u_q[:, :, seg],
                {g: t[:, :, seg] for g, t in gates.items()})
            ys.append(y)
            pos, phase = pos + n, (phase + n) % C
            if phase == 0:
                start = mem
        o = torch.cat(ys, 2) if ys else v.new_zeros(v.shape)    # (B, H, T, Dv)
        new = AtlasState(
            start=self._pack(start).to(out_dtype), memory=self._pack(mem).to(out_dtype),
            momentum=None if mom is None else self._pack(mom).to(out_dtype),
            keys=keys[:, :, T:].to(out_dtype), values=values[:, :, T:].to(out_dtype),
            gammas=gammas[:, :, T:].to(out_dtype), phase=phase)
        return self._output(o, x), new

    def step_unchecked(self, x_t: Tensor, state: AtlasState) -> tuple[Tensor, AtlasState]:
        """The recurrence itself: one explicit gradient step of the windowed loss."""
        x = x_t.unsqueeze(1)                                    # (B, 1, D)
        out_dtype = state.memory.dtype
        q, k, v, gates = self._project(x)                       # (B, H, 1, Dh)
        work = q.dtype
        keys = torch.cat([state.keys.to(work), k], 2)           # (B, H, w, Dh): the window
        values = torch.cat([state.values.to(work), v], 2)
        gammas = torch.cat([state.gammas.to(work), gates["gamma"]], 2)
        start = self._unpack(state.start.to(work))
        W = self._unpack(state.memory.to(work))
        # ∇ Σ_i γ_i ||M(φ(k_i)) - v_i||² at the chunk-start memory: Σ_i a_i b_iᵀ per matrix
        grads = [torch.einsum("...io,...ij->...oj", a, b)
                 for a, b in self._grad_factors(start, self._features(keys), values, gammas)]

        def gate(name: str) -> Tensor:
            return gates[name][:, :, 0, None, None]             # (B, H, 1, 1)

        S = None
        if self.cfg.optimizer == "gd":
            step = grads
        else:
            theta = gate("log_theta").exp()
            inflow = 1 - theta if self.cfg.dampen else 1
            S = [theta * s + inflow * g
                 for s, g in zip(self._unpack(state.momentum.to(work)), grads)]
            step = S if self.cfg.optimizer == "momentum" else [newton_schulz(s) for s in S]
        alpha, eta = gate("log_alpha").exp(), gate("eta")
        W = [alpha * m - eta * d for m, d in zip(W, step)]
        o = self._memory_forward(lambda i, z: z @ W[i].mT, self._features(q))   # (B, H, 1, Dv)
        phase = (state.phase + 1) % self.cfg.chunk
        new = AtlasState(
            start=self._pack(W if phase == 0 else start).to(out_dtype),
            memory=self._pack(W).to(out_dtype),
            momentum=None if S is None else self._pack(S).to(out_dtype),
            keys=keys[:, :, 1:].to(out_dtype), values=values[:, :, 1:].to(out_dtype),
            gammas=gammas[:, :, 1:].to(out_dtype), phase=phase)
        return self._output(o, x).squeeze(1), new

    # -- the chunk-parallel update ------------------------------------------------
    def _segment(self, start: Weights, mem: Weights, mom: Weights | None, u: Tensor, v: Tensor,
                 gamma: Tensor, u_q: Tensor, gates: dict[str, Tensor]
                 ) -> tuple[Tensor, Weights, Weights | None]:
        """n <= C tokens inside one chunk, all gradients taken at ``start``.

        Args:
            start, mem, mom: chunk-start memory, memory before the segment, momentum.
            u, v, gamma: (B, H, w-1+n, .) features, values and weights of the w - 1 tokens
                before the segment and of its n tokens.
            u_q: (B, H, n, F) query features. gates: per-token gates, (B, H, n) each.

        Returns:
            y: (B, H, n, Dv) = M_t(φ(q_t)), and the memory and momentum after the segment.
        """
        n = u_q.shape[-2]
        factors = self._grad_factors(start, u, v, gamma)        # per matrix (a, b), (B, H, m, .)
        band = _band(n, self.cfg.window, u)                     # g_j = Σ_i band_ji a_i b_iᵀ
        lam, q_a = _decay(gates["log_alpha"])                   # (B, H, n, n), (B, H, n)
        K = lam * gates["eta"].unsqueeze(-2)                    # K_jl = Π_{l<r<=j} α_r η_l
        opt = self.cfg.optimizer
        if opt == "gd":
            # M_j = Q_j M - Σ_{l<=j} K_jl g_l
            Z, c = K @ band, None
        else:
            th, p_t = _decay(gates["log_theta"])                # S_l = P_l S + Σ_{r<=l} Θ_lr g_r
            if self.cfg.dampen:                                 # g_r enters as (1 - θ_r) g_r
                th = th * -torch.expm1(gates["log_theta"]).unsqueeze(-2)
            Zs = th @ band                                      # (B, H, n, m)
            Z, c = K @ Zs, (K @ p_t.unsqueeze(-1)).squeeze(-1)

        if opt == "muon":
            # NS5 is not linear in S_l, so the n momenta and memories are formed.
            W_all, new_mem, new_mom = [], [], []
            for (a, b), m0, s0 in zip(factors, mem, mom):
                S_all = (p_t[..., None, None] * s0.unsqueeze(-3)
                         + torch.einsum("...li,...io,...ij->...loj", Zs, a, b))   # (B, H, n, o, i)
                Wl = q_a[..., None, None] * m0.unsqueeze(-3) - torch.einsum(
                    "...jl,...loi->...joi", K, newton_schulz(S_all))
                W_all.append(Wl)
                new_mem.append(Wl[..., -1, :, :])
                new_mom.append(S_all[..., -1, :, :])

            def apply(i: int, z: Tensor) -> Tensor:
                return torch.einsum("...joi,...ji->...jo", W_all[i], z)
        else:
            def apply(i: int, z: Tensor) -> Tensor:
                # M_j z_j = Q_j M z_j - c_j S z_j - Σ_i Z_ji a_i (b_i · z_j)
                a, b = factors[i]
                out = q_a.unsqueeze(-1) * (z @ mem[i].mT) - ((z @ b.mT) * Z) @ a
                if c is not None:
                    out = out - c.unsqueeze(-1) * (z @ mom[i].mT)
                return out

            new_mem, new_mom = [], None if c is None else []
            for i, (a, b) in enumerate(factors):
                W = q_a[..., -1, None, None] * mem[i] - torch.einsum(
                    "...i,...io,...ij->...oj", Z[..., -1, :], a, b)
                if c is not None:
                    W = W - c[..., -1, None, None] * mom[i]
                    new_mom.append(p_t[..., -1, None, None] * mom[i] + torch.einsum(
                        "...i,...io,...ij->...oj", Zs[..., -1, :], a, b))
                new_mem.append(W)
        return self._memory_forward(apply, u_q), new_mem, new_mom

    def _grad_factors(self, W: Weights, u: Tensor, v: Tensor, gamma: Tensor
                      ) -> list[tuple[Tensor, Tensor]]:
        """Per matrix, (a, b) with ∇_W γ_i ||M_W(u_i) - v_i||² = a_i b_iᵀ (backprop by hand).

        u: (..., m, F), v: (..., m, Dv), gamma: (..., m). Returns a: (..., m, out),
        b: (..., m, in). Written with differentiable ops, so training sees through it.
        """
        if self.cfg.memory == "linear":
            delta = 2 * gamma.unsqueeze(-1) * (u @ W[0].mT - v)             # (..., m, Dv)
            return [(delta, u)]
        z = u @ W[1].mT                                                     # (..., m, E)
        h = F.silu(z)
        delta = 2 * gamma.unsqueeze(-1) * (u @ W[0].mT + h @ W[2].mT - v)   # (..., m, Dv)
        hidden = (delta @ W[2]) * _silu_grad(z)                             # (..., m, E)
        return [(delta, u), (hidden, u), (delta, h)]

    def _memory_forward(self, apply: Callable[[int, Tensor], Tensor], u: Tensor) -> Tensor:
        """M(u) given ``apply(i, z)`` = the i-th matrix times z (per token)."""
        y = apply(0, u)
        if self.cfg.memory == "mlp":
            y = y + apply(2, F.silu(apply(1, u)))
        return y

    # -- shared parts of both faces ----------------------------------------------
    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Heads-first q, k (l2-normalised), v and gates, in at least float32."""
        B, T, _ = x.shape
        H, Dh = self.heads, self.head_dim
        work = torch.promote_types(x.dtype, torch.float32)

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T, H, Dh).transpose(1, 2).to(work)            # (B, H, T, Dh)

        q = F.normalize(heads(self.q_proj(x)), dim=-1)
        k = F.normalize(heads(self.k_proj(x)), dim=-1)
        v = heads(self.v_proj(x))
        raw = self.gate_proj(x).view(B, T, len(self.gates), H).permute(2, 0, 3, 1).to(work)
        g = dict(zip(self.gates, raw))                                      # (B, H, T) each
        gates = {"log_alpha": F.logsigmoid(g["alpha"]), "eta": self._lr * torch.sigmoid(g["eta"]),
                 "gamma": torch.sigmoid(g["gamma"])}
        if "theta" in g:
            gates["log_theta"] = F.logsigmoid(g["theta"])
        return q, k, v, gates

    def _features(self, x: Tensor) -> Tensor:
        """φ(x) = [a_0, a_1 x, a_2 x⊗x, ..., a_p x^⊗p] (..., F); x itself when p = 0."""
        p = self.cfg.poly_degree
        if not p:
            return x
        # Keys and queries have unit norm, so |x^⊗i| = 1 and |φ(x)|² = Σ a_i²: dividing by
        # it keeps unit-norm features whatever the learned a_i, so ``lr`` bounds the step.
        coef = self.poly_coef.to(x.dtype)
        coef = coef * torch.rsqrt(coef.pow(2).sum())
        parts, power = [coef[0] * torch.ones_like(x[..., :1])], x
        for i in range(1, p + 1):
            if i > 1:
                power = (power.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
            parts.append(coef[i] * power)
        return torch.cat(parts, -1)

    def _unpack(self, flat: Tensor) -> Weights:
        """(..., P) -> [W0, ...], each (..., out, in) (views)."""
        sizes = [o * i for o, i in self.memory_shapes]
        return [t.unflatten(-1, s) for t, s in zip(flat.split(sizes, -1), self.memory_shapes)]

    def _pack(self, weights: Weights) -> Tensor:
        return torch.cat([w.flatten(-2) for w in weights], -1)

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """(B, H, T, Dv) memory read-outs -> (B, T, D): per-head RMS norm, swish gate, o_proj."""
        B, T, D = x.shape
        o = self.norm(o.to(x.dtype).transpose(1, 2)).reshape(B, T, D)
        return self.o_proj(o * F.silu(self.g_proj(x)))

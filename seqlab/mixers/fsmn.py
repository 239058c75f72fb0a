"""Dilated FSMN memory with a gated convolution unit: the recurrence-free "recurrent" module of
MossFormer2 (Zhao et al. 2023, https://arxiv.org/abs/2312.11825), made causal.

Per frame, with u_t = LN(PReLU(W_in x_t)) in a bottleneck of E channels:
    [a_t; g_t] = causal depthwise conv(SiLU(W_b u))_t;  z_0 = W_p ReLU(W_h a)   (GCU branches, FSMN input)
    z_{l+1,t} = PReLU_l(sum_{i<=l} sum_{k<K} w_{l,i,k} ⊙ z_{i, t - k 2^l})      (dense dilated memory)
    y_t = W_out LN(g_t ⊙ (a_t + z_{D,t}) + u_t)
Causal by choice: MossFormer2 separates whole recordings and centres its kernels; a sequence
mixer must not see the future, so every convolution here keeps only the past half (K taps
at lags 0..K-1), and the paper's InstanceNorm between the dilated layers (statistics over
the whole sequence) is left out. Parallel face: the convolutions over the whole sequence.
Recurrent face: the state keeps, for each convolution, the last inputs it still needs (a
window of past frames per layer), so a step computes one output from them.

Example:
    >>> m = seqlab.mixers.build("fsmn", dim=64, kernel=8, depth=3)
    >>> y, s = m(torch.randn(2, 100, 64))
    >>> y_t, s = m.step(torch.randn(2, 64), s)
    >>> m.receptive_field                     # an input at t reaches outputs t .. t + 65
    66
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import Config, require
from seqlab.mixers import register
from seqlab.mixers.base import Mixer
from seqlab.state import State


@dataclasses.dataclass(frozen=True)
class FSMNConfig(Config):
    """Options of the ``fsmn`` mixer.

    Attributes:
        inner: E, width of the bottleneck the memory runs in; None means dim // 2
            (MossFormer2 maps 512 channels to 256).
        kernel: K, taps of each dilated memory convolution (lags 0..K-1 times its
            dilation). 20 is the causal half of MossFormer2's 39-tap centred kernel.
        depth: D, dilated memory layers, dilations 1, 2, ..., 2^(D-1); layer l reads
            the FSMN input and the outputs of all layers before it (dense connections;
            the paper uses 2).
        branch_kernel: taps of the causal depthwise convolution in each GCU branch
            (the paper's branches use 17, centred); 1 means no convolution there.
    """

    inner: int | None = None
    kernel: int = 20
    depth: int = 2
    branch_kernel: int = 17

    def validate(self) -> None:
        require(self.inner is None or self.inner >= 1, self, "inner", "None (dim // 2) or a positive int")
        require(self.kernel >= 2, self, "kernel", "an int >= 2 (one tap is the current frame)")
        # The memory window grows as 2^depth; beyond 10 it is thousands of frames per channel.
        require(1 <= self.depth <= 10, self, "depth", "an int from 1 to 10")
        require(self.branch_kernel >= 1, self, "branch_kernel", "a positive int")


@dataclasses.dataclass(frozen=True)
class FSMNState(State):
    """The past frames each convolution still needs (oldest first); zeros before the start.

    Attributes:
        branch: (B, 2E, branch_kernel - 1) the last inputs of the GCU branch convolution.
        memory: (B, E, D, W) the last W = (K - 1) 2^(D-1) frames of the memory's dense
            inputs z_0 .. z_{D-1}; layer l reads the newest (K - 1) 2^l of them.
    """

    branch: Tensor
    memory: Tensor


def _prelu(h: Tensor, slope: Tensor) -> Tensor:
    """PReLU, ``slope`` broadcast against ``h`` and cast to its dtype (bf16 under autocast)."""
    return torch.where(h >= 0, h, slope.to(h.dtype) * h)


def _last(t: Tensor, n: int) -> Tensor:
    """The last ``n`` frames of ``t`` (..., T), copied so the state keeps nothing else alive."""
    return t[..., t.shape[-1] - n:].contiguous()


@register("fsmn")
class FSMN(Mixer):
    """Causal MossFormer2 recurrent module: bottleneck -> GCU(dilated dense FSMN) -> projection.

    y = W_out LN(g ⊙ FSMN(a) + u); a and g are the two GCU branches, FSMN(a) = a + z_D
    with z_D the last dense dilated memory layer (recurrence in the module docstring).
    """

    Config = FSMNConfig
    State = FSMNState
    # R = 1 + (3 - 1)(2^2 - 1) + (2 - 1) = 8 frames, so T = 23 spans several windows.
    example_options = {"inner": 8, "kernel": 3, "depth": 2, "branch_kernel": 2}
    cost = ("parallel O(L·(d·E + E² + D²·K·E)) time, O(L·D·E) memory (direct causal "
            "convolutions); step O(d·E + E² + D²·K·E); state E·(D·(K-1)·2^(D-1) + "
            "2·(branch_kernel-1)), constant in L")

    def __init__(self, dim: int, cfg: FSMNConfig):
        super().__init__(dim, cfg)
        E = cfg.inner if cfg.inner is not None else max(1, dim // 2)
        self.inner = E
        self.dilations = tuple(2 ** l for l in range(cfg.depth))
        self.window = (cfg.kernel - 1) * self.dilations[-1]
        # Bottleneck (the paper's 1x1 conv + PReLU, then a per-frame layer norm).
        self.in_proj = nn.Linear(dim, E)
        # PReLU slopes kept as plain parameters (nn.PReLU wants channels at dim 1), init 0.25.
        self.in_slope = nn.Parameter(torch.full((E,), 0.25))
        self.norm_in = nn.LayerNorm(E)
        # GCU: both branches in one projection and one depthwise conv, split after it.
        self.branch_proj = nn.Linear(E, 2 * E)
        self.branch_conv = nn.Conv1d(2 * E, 2 * E, cfg.branch_kernel, groups=2 * E)
        # FSMN: hidden layer and projection, then the dense dilated memory. Layer l is a
        # grouped conv whose group c holds channel c of z_0 .. z_l (weight (E, l + 1, K)).
        self.fsmn_hidden = nn.Linear(E, E)
        self.fsmn_proj = nn.Linear(E, E, bias=False)
        self.memory = nn.ModuleList(
            nn.Conv1d(E * (l + 1), E, cfg.kernel, dilation=d, groups=E)
            for l, d in enumerate(self.dilations))
        self.memory_slope = nn.Parameter(torch.full((cfg.depth, E), 0.25))
        self.norm_out = nn.LayerNorm(E)
        self.out_proj = nn.Linear(E, dim)

    @property
    def receptive_field(self) -> int:
        """R: an input at frame t changes outputs at frames t .. t + R - 1 and no others."""
        return (self.cfg.branch_kernel - 1) + (self.cfg.kernel - 1) * (2 ** self.cfg.depth - 1) + 1

    # -- state ------------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> FSMNState:
        """Zero frames before the start (the parallel face's zero padding)."""
        device, dtype = self._state_device(device), self._state_dtype(dtype)
        E = self.inner
        return FSMNState(
            branch=torch.zeros(batch_size, 2 * E, self.cfg.branch_kernel - 1, device=device, dtype=dtype),
            memory=torch.zeros(batch_size, E, self.cfg.depth, self.window, device=device, dtype=dtype))

    def state_size(self, seq_len: int) -> int:
        E = self.inner
        return 2 * E * (self.cfg.branch_kernel - 1) + E * self.cfg.depth * self.window

    # -- faces ------------------------------------------------------------------
    def mix(self, x: Tensor, state: FSMNState | None) -> tuple[Tensor, FSMNState]:
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        if x.shape[1] == 0:   # no frames: nothing to convolve, nothing to remember
            return self.out_proj(x.new_zeros(x.shape[0], 0, self.inner)), state
        u = self._bottleneck(x)                                          # (B, T, E)
        s = F.silu(self.branch_proj(u)).transpose(1, 2)                  # (B, 2E, T)
        s_all = torch.cat([state.branch.to(s.dtype), s], -1)             # (B, 2E, Kb - 1 + T)
        ag = self.branch_conv(s_all).transpose(1, 2)                     # (B, T, 2E)
        a, g = ag.chunk(2, -1)
        z0 = self.fsmn_proj(F.relu(self.fsmn_hidden(a))).transpose(1, 2)  # (B, E, T)

        # Dense dilated memory: layer l convolves [past frames, new frames] of z_0 .. z_l.
        past = state.memory.to(z0.dtype)                                 # (B, E, D, W)
        zs = [z0]
        for l, conv in enumerate(self.memory):
            P = (self.cfg.kernel - 1) * self.dilations[l]
            dense = torch.stack(zs, 2)                                   # (B, E, l + 1, T)
            dense = torch.cat([past[:, :, :l + 1, self.window - P:], dense], -1)
            zs.append(_prelu(conv(dense.flatten(1, 2)), self.memory_slope[l, :, None]))  # (B, E, T)
        memory = _last(torch.cat([past, torch.stack(zs[:-1], 2)], -1), self.window)

        y = self._output(a, g, zs[-1].transpose(1, 2), u)
        new = FSMNState(branch=_last(s_all, self.cfg.branch_kernel - 1).to(state.branch.dtype),
                        memory=memory.to(state.memory.dtype))
        return y, new

    def step_unchecked(self, x_t: Tensor, state: FSMNState) -> tuple[Tensor, FSMNState]:
        u = self._bottleneck(x_t)                                        # (B, E)
        s = F.silu(self.branch_proj(u))                                  # (B, 2E)
        s_all = torch.cat([state.branch.to(s.dtype), s[:, :, None]], -1)  # (B, 2E, Kb)
        ag = (s_all * self.branch_conv.weight[:, 0]).sum(-1) + self.branch_conv.bias
        a, g = ag.chunk(2, -1)
        z0 = self.fsmn_proj(F.relu(self.fsmn_hidden(a)))                 # (B, E)

        past = state.memory.to(z0.dtype)                                 # (B, E, D, W)
        zs = [z0]
        for l, conv in enumerate(self.memory):
            d = self.dilations[l]
            P = (self.cfg.kernel - 1) * d
            now = torch.stack(zs, 2)[..., None]                          # (B, E, l + 1, 1)
            window = torch.cat([past[:, :, :l + 1, self.window - P:], now], -1)
            taps = window[..., ::d]                                      # (B, E, l + 1, K): lags K-1 .. 0
            w = conv.weight.view(self.inner, l + 1, self.cfg.kernel)     # (E, l + 1, K)
            zs.append(_prelu((taps * w).sum((-1, -2)) + conv.bias, self.memory_slope[l]))  # (B, E)
        memory = torch.cat([past[..., 1:], torch.stack(zs[:-1], 2)[..., None]], -1)

        y = self._output(a, g, zs[-1], u)
        new = FSMNState(branch=s_all[..., 1:].to(state.branch.dtype),
                        memory=memory.to(state.memory.dtype))
        return y, new

    # -- shared parts of both faces ----------------------------------------------
    def _bottleneck(self, x: Tensor) -> Tensor:
        """x (..., dim) -> u (..., E): linear, PReLU, per-frame layer norm."""
        return self.norm_in(_prelu(self.in_proj(x), self.in_slope))

    def _output(self, a: Tensor, g: Tensor, z: Tensor, u: Tensor) -> Tensor:
        """GCU gate and skip, per-frame norm, output projection: (..., E) -> (..., dim)."""
        return self.out_proj(self.norm_out(g * (a + z) + u))

"""The non-causal face of a causal mixer: a forward run beside a run over the reversed prefix.

Masks in seqlab are one number per row, the prefix length ``p_b`` (UniXcoder's three modes):
positions ``i < p_b`` see the whole prefix ``0 .. p_b - 1``, later positions see ``j <= i``.
``p_b = 0`` is causal (a decoder), ``p_b = `` the row's length is bidirectional (an encoder;
padding after the length is never seen by a real position), anything between is a prefix LM.

Attention does this with a mask (``Attention.mix_prefix``). A recurrent mixer cannot look
ahead, so :func:`prefix_run` runs it twice with the same weights: once forward over the whole
row, once over the row's prefix reversed in place. Inside the prefix the output is the mean of
the two directions, after it the forward run alone (the mean keeps the scale of the causal
face, so a model trained causally can go on training with another mask and vice versa):

    y_i = (fwd_i + bwd_i) / 2   (i < p_b),    y_i = fwd_i   (i >= p_b)
    fwd = mixer(x),   bwd = reverse_within(mixer(reverse_within(x, p)), p)

The state returned is the forward run's: continuing causally after the call is exact, which is
how a prefix LM decodes after its bidirectional prompt.

Example:
    >>> m = seqlab.mixers.build("mamba", dim=64)
    >>> y, state = prefix_run(m, torch.randn(2, 10, 64), torch.tensor([10, 6]))
"""

from __future__ import annotations

import torch
from torch import Tensor


def reverse_within(x: Tensor, n: Tensor) -> Tensor:
    """Row ``b`` of ``x (B, T, ...)`` with its first ``n[b]`` positions reversed, the rest kept.

    An involution: applying it twice gives ``x`` back.
    """
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    n = n.to(x.device)[:, None]
    index = torch.where(t < n, n - 1 - t, t)                                   # (B, T)
    return x.gather(1, index.view(*index.shape, *(1,) * (x.dim() - 2)).expand_as(x))


def prefix_run(mixer, x: Tensor, prefix: Tensor, tokens: Tensor | None = None):
    """``mixer``'s non-causal face from two runs of its causal face (see the module docstring).

    Args:
        mixer: any ``seqlab.mixers.Mixer``.
        x: (B, T, D) inputs.
        prefix: (B,) int64, each row's prefix length in [0, T].
        tokens: (B, T) ids, for a mixer that reads them (they are reversed alike).

    Returns:
        ``(y, state)``: ``y (B, T, D)`` and the forward run's state after the T positions.
    """
    kw = {} if tokens is None else {"tokens": tokens}
    fwd, state = mixer.mix(x, None, **kw)
    if int(prefix.max()) == 0:
        return fwd, state
    kw_rev = {} if tokens is None else {"tokens": reverse_within(tokens, prefix)}
    bwd, _ = mixer.mix(reverse_within(x, prefix), None, **kw_rev)
    bwd = reverse_within(bwd, prefix)
    inside = (torch.arange(x.shape[1], device=x.device)[None] < prefix.to(x.device)[:, None])
    return torch.where(inside[..., None], (fwd + bwd) / 2, fwd), state


def check_prefix(prefix, batch_size: int, length: int, device=None) -> Tensor:
    """``prefix`` (an int, or one int per row) as a (B,) int64 tensor in [0, length].

    Raises:
        ValueError: a float, a wrong number of rows, or a length outside [0, length].
    """
    p = torch.as_tensor(prefix, device=device)
    if p.is_floating_point() or p.dtype == torch.bool:
        raise ValueError(f"prefix must be a number of positions (int), got {p.dtype}")
    p = p.to(torch.long)
    if p.dim() == 0:
        p = p.expand(batch_size)
    if p.dim() != 1 or p.shape[0] != batch_size:
        raise ValueError(f"prefix must be one int or one per row ({batch_size} rows); got shape "
                         f"{tuple(p.shape)}")
    if (p < 0).any() or (p > length).any():
        raise ValueError(f"prefix lengths must lie in [0, {length}] (the sequence length); got "
                         f"{p.tolist()}")
    return p

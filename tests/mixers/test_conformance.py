"""One conformance suite run on every registered mixer.

A mixer is covered by registering it: these tests build it with its
``example_options`` at dim 32 in float64 and prove that its parallel and
recurrent faces agree, that it is causal, and that its state behaves. A mixer
that reads token ids (``needs_tokens``) gets ids made from x at every call
(``tests/mixers/token_ids.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import random
import zlib

import pytest
import torch

import seqlab
from seqlab.state import State
from tests.mixers.token_ids import with_tokens


@dataclasses.dataclass(frozen=True)
class _ForeignState(State):
    h: torch.Tensor


NAMES = seqlab.mixers.names()
# State tests run with autograd on (training) and off (decoding: where caches write in place).
GRAD = pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
DIM, B, T = 32, 3, 23
TOL = dict(atol=1e-6, rtol=1e-6)


def make(name: str, dtype=torch.float64):
    cls = seqlab.mixers.get(name)
    m = seqlab.mixers.build(name, dim=DIM, **cls.example_options).to(dtype)
    # Perturb parameters away from their init so that e.g. zero-initialised
    # gates or identity-like projections cannot hide a mismatch.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return with_tokens(m)


def chunkings(total: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = [[1] * total, [total]]
    for _ in range(2):
        sizes, left = [], total
        while left:
            s = min(left, rng.randint(1, 9))
            sizes.append(s)
            left -= s
        out.append(sizes)
    return out


def run_chunks(m, x, sizes, state=None):
    ys, pos = [], 0
    for s in sizes:
        y, state = m(x[:, pos:pos + s], state)
        ys.append(y)
        pos += s
    return torch.cat(ys, 1), state


def assert_states_close(a, b):
    assert type(a) is type(b)
    ta, tb = list(_tensors(a)), list(_tensors(b))
    assert len(ta) == len(tb)
    for u, v in zip(ta, tb):
        torch.testing.assert_close(u, v, **TOL)


def _tensors(s):
    # Compare the live part of a state; caches expose it via live_tensors().
    if hasattr(s, "live_tensors"):
        yield from s.live_tensors()
        return
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if isinstance(v, torch.Tensor):
            yield v


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_whole(name, grad):
    with torch.set_grad_enabled(grad):
        m = make(name)
        x = torch.randn(B, T, DIM, dtype=torch.float64)
        y_full, s_full = m(x)
        for i, sizes in enumerate(chunkings(T, seed=zlib.crc32(name.encode()) % 1000)):
            y, s = run_chunks(m, x, sizes, m.init_state(B, dtype=torch.float64))
            torch.testing.assert_close(y, y_full, **TOL, msg=lambda e: f"chunks {sizes}: {e}")
            assert_states_close(s, s_full)


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_step_equals_parallel(name, grad):
    with torch.set_grad_enabled(grad):
        m = make(name)
        x = torch.randn(B, T, DIM, dtype=torch.float64)
        y_full, s_full = m(x)
        s, ys = m.init_state(B, dtype=torch.float64), []
        for t in range(T):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), y_full, **TOL)
        assert_states_close(s, s_full)


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_continue_from_state(name, grad):
    """A prefix run then a continuation equals the whole run (no state is mutated)."""
    with torch.set_grad_enabled(grad):
        m = make(name)
        x = torch.randn(B, T, DIM, dtype=torch.float64)
        y_full, _ = m(x)
        _, s_prefix = m(x[:, :9])
        keep = s_prefix.clone()
        y_a, _ = m(x[:, 9:], s_prefix)
        y_b, _ = m(x[:, 9:], s_prefix)  # the same state used twice: a snapshot
        torch.testing.assert_close(y_a, y_full[:, 9:], **TOL)
        torch.testing.assert_close(y_b, y_a, **TOL)
        assert_states_close(s_prefix, keep)


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_sibling_continuations_are_independent(name, grad):
    """Two continuations of one state (and a continuation of each) equal fresh runs: no branch
    reads keys another wrote, including caches with spare capacity (continued once before)."""
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    xa, xb, nxt = (torch.randn(B, n, DIM, dtype=torch.float64) for n in (3, 4, 2))
    with torch.set_grad_enabled(grad):
        _, s = m(x[:, :10])
        _, s = m(x[:, 10:], s)  # continued once: a cache now has spare capacity
        ya, sa = m(xa, s)
        yb, sb = m(xb, s)
        ya2, _ = m(nxt, sa)
        yb2, _ = m(nxt, sb)
        ref_a, _ = m(torch.cat([x, xa, nxt], 1))
        ref_b, _ = m(torch.cat([x, xb, nxt], 1))
    torch.testing.assert_close(torch.cat([ya, ya2], 1), ref_a[:, T:], **TOL)
    torch.testing.assert_close(torch.cat([yb, yb2], 1), ref_b[:, T:], **TOL)


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_rewound_state_continues_or_refuses(name, grad):
    """Rewinding and continuing (speculative decoding's rollback) is right, and the longer
    state it was rewound from is then either still right or refused with a StateError."""
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    xa, xb = torch.randn(B, 5, DIM, dtype=torch.float64), torch.randn(B, 5, DIM, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        _, s = m(x[:, :12])
        _, s_long = m(xa, s)
        if not type(s_long).can_truncate:
            pytest.skip("a recurrent state cannot rewind (covered by test_truncate_or_refuse)")
        yb, _ = m(xb, s_long.truncate(14))
        ref, _ = m(torch.cat([x[:, :12], xa[:, :2], xb], 1))
        torch.testing.assert_close(yb, ref[:, 14:], **TOL)
        try:
            y_long, _ = m(x[:, 12:13], s_long)
        except seqlab.state.StateError as e:
            assert "clone" in str(e)
        else:
            ref_long, _ = m(torch.cat([x[:, :12], xa, x[:, 12:13]], 1))
            torch.testing.assert_close(y_long, ref_long[:, -1:], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 11:] = torch.randn_like(x2[:, 11:])
    y1, _ = m(x)
    y2, _ = m(x2)
    torch.testing.assert_close(y1[:, :11], y2[:, :11], **TOL)
    assert (y1[:, 11:] - y2[:, 11:]).abs().max() > 1e-6


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_select_and_clone(name, grad):
    with torch.set_grad_enabled(grad):
        m = make(name)
        x = torch.randn(B, T, DIM, dtype=torch.float64)
        _, s = m(x[:, :10])
        idx = torch.tensor([2, 0, 0, 1])
        s_sel = s.select(idx)
        assert s_sel.batch_size == 4
        y_sel, _ = m(x[idx, 10:], s_sel)
        y_ref, _ = m(x[:, 10:], s)
        torch.testing.assert_close(y_sel, y_ref[idx], **TOL)
        c = s.clone()
        assert_states_close(c, s)
        for u, v in zip(_tensors(c), _tensors(s)):
            assert u.data_ptr() != v.data_ptr() or u.numel() == 0
        # cat undoes a split
        parts = [s.select([i]) for i in range(B)]
        joined = type(s).cat(parts)
        y_j, _ = m(x[:, 10:], joined)
        torch.testing.assert_close(y_j, y_ref, **TOL)


@GRAD
@pytest.mark.parametrize("name", NAMES)
def test_truncate_or_refuse(name, grad):
    with torch.set_grad_enabled(grad):
        m = make(name)
        x = torch.randn(B, T, DIM, dtype=torch.float64)
        _, s = m(x[:, :10])
        _, s_long = m(x[:, 10:15], s)
        if type(s_long).can_truncate:
            y_ref, _ = m(x[:, 10:], s)
            y_back, _ = m(x[:, 10:], s_long.truncate(10))
            torch.testing.assert_close(y_back, y_ref, **TOL)
        else:
            with pytest.raises(seqlab.state.StateError, match="cannot rewind"):
                s_long.truncate(10)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    m = make(name, dtype=torch.float32)
    x = torch.randn(B, T, DIM, requires_grad=True)
    y, _ = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_state_size_matches_tensors(name):
    m = make(name)
    for length in (1, 7, T):
        _, s = m(torch.randn(B, length, DIM, dtype=torch.float64))
        live = sum(t.numel() for t in _tensors(s))
        assert live == B * m.state_size(length), f"length {length}"
        assert s.nbytes() >= live * 8


@pytest.mark.parametrize("name", NAMES)
def test_float32_close_to_float64(name):
    m64 = make(name)
    m32 = copy.deepcopy(m64).float()
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y64, _ = m64(x)
    y32, _ = m32(x.float())
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_state_and_input_are_named(name):
    m = make(name)
    x = torch.randn(B, 5, DIM, dtype=torch.float64)
    _, s = m(x)
    with pytest.raises(seqlab.state.StateError, match="batch size"):
        m(torch.randn(B + 1, 5, DIM, dtype=torch.float64), s)
    s_other = _ForeignState(torch.zeros(B, 4, dtype=torch.float64))
    with pytest.raises(seqlab.state.StateError, match=type(s).__name__):
        m(x, s_other)
    with pytest.raises(ValueError, match="shape"):
        m(x[0])
    with pytest.raises(ValueError, match="dtype"):
        m(torch.ones(B, 5, DIM, dtype=torch.long))

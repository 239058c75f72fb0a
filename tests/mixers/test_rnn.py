"""Elman RNN checks: the fused parallel face and the explicit cell against a reference
recurrence written here, for both nonlinearities, in float64."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.config import ConfigError

TOL = dict(atol=1e-12, rtol=1e-10)
ACT = {"tanh": torch.tanh, "relu": torch.relu}


def make(dim=10, **options):
    m = seqlab.mixers.build("rnn", dim=dim, **{"hidden": 14, **options}).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def reference(m, x, h0=None):
    """h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), y_t = W_out h_t, token by token."""
    r, act = m.rnn, ACT[m.cfg.nonlinearity]
    h = torch.zeros(x.shape[0], m.hidden, dtype=torch.float64) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        h = act(x[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + h @ r.weight_hh_l0.T + r.bias_hh_l0)
        ys.append(h @ m.out.weight.T if m.cfg.out_proj else h)
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("options", [{}, {"hidden": None, "out_proj": False}], ids=["H14-proj", "H=dim-noproj"])
def test_both_faces_equal_reference(nonlinearity, options):
    m = make(nonlinearity=nonlinearity, **options)
    x = torch.randn(3, 19, 10, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y_ref, h_ref = reference(m, x)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(s.h, h_ref, **TOL)
        # Continue from a non-zero state, in parallel and one token at a time.
        y2, s2 = m(x[:, :6], s)
        y2_ref, h2_ref = reference(m, x[:, :6], h_ref)
        torch.testing.assert_close(y2, y2_ref, **TOL)
        torch.testing.assert_close(s2.h, h2_ref, **TOL)
        st, ys = s, []
        for t in range(6):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), y2_ref, **TOL)
        torch.testing.assert_close(st.h, h2_ref, **TOL)


def test_nonlinearity_reaches_the_fused_kernel():
    tanh = make()
    relu = make(nonlinearity="relu")
    relu.load_state_dict(tanh.state_dict())
    assert relu.rnn.nonlinearity == "relu" and tanh.rnn.nonlinearity == "tanh"
    x = torch.randn(2, 9, 10, dtype=torch.float64)
    _, s_relu = relu(x)
    _, s_tanh = tanh(x)
    assert (s_relu.h >= 0).all() and (s_tanh.h < 0).any()
    assert (s_relu.h - s_tanh.h).abs().max() > 1e-3


def test_state_size_and_cost():
    m = make(hidden=17)
    _, s = m(torch.randn(2, 5, 10, dtype=torch.float64))
    assert s.h.shape == (2, 17) and m.state_size(5) == 17
    assert "step" in type(m).cost and "state" in type(m).cost


@pytest.mark.parametrize("options,match", [
    ({"nonlinearity": "sigmoid"}, r"ElmanConfig.nonlinearity = 'sigmoid' is not allowed: expected one of 'tanh', 'relu'"),
    ({"hidden": 0}, r"ElmanConfig.hidden = 0 is not allowed"),
    ({"hidden": 5, "out_proj": False}, r"out_proj=False needs hidden == dim"),
], ids=["nonlinearity", "hidden", "out_proj"])
def test_option_errors(options, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        seqlab.mixers.build("rnn", dim=8, **options)

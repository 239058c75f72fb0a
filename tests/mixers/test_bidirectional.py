"""The non-causal face (``Mixer.encode`` / ``mix_prefix``) of every registered mixer: causal,
prefix-LM and bidirectional masks from one set of weights (UniXcoder's three modes)."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.mixers.bidirectional import reverse_within
from seqlab.nn.rotary import apply_rotary, rotary_angles
from tests.mixers.test_conformance import DIM, NAMES, make
from tests.mixers.token_ids import token_ids

B, T = 3, 11
TOL = dict(atol=1e-9, rtol=1e-9)
PREFIX = torch.tensor([11, 4, 0])   # bidirectional, prefix LM, causal rows in one batch


def encode(m, x, prefix=None):
    mixer = getattr(m, "mixer", m)   # WithTokens hands the ids of x to mixers that read them
    kw = {"tokens": token_ids(x)} if mixer.needs_tokens else {}
    return mixer.encode(x, prefix, **kw)


def forward(m, x):
    return m(x)


@pytest.mark.parametrize("name", NAMES)
def test_prefix_zero_is_the_causal_face(name):
    torch.manual_seed(0)
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    torch.testing.assert_close(encode(m, x, 0)[0], forward(m, x)[0], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_prefix_sees_its_whole_prefix_and_nothing_after_it(name):
    torch.manual_seed(1)
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, _ = encode(m, x, PREFIX)
    # Change the last token of row 1's prefix (position 3): the earlier prefix positions feel
    # it (the n-gram layer only through matched n-grams, which random x need not have).
    x2 = x.clone()
    x2[1, 3] += 1.0
    y2, _ = encode(m, x2, PREFIX)
    if name != "ngram":
        assert (y2[1, :3] - y[1, :3]).abs().amax(-1).min() > 1e-9
    # Change positions after the prefix: the prefix outputs stay exactly as they were.
    x3 = x.clone()
    x3[1, 4:] = torch.randn(T - 4, DIM, dtype=torch.float64)
    y3, _ = encode(m, x3, PREFIX)
    torch.testing.assert_close(y3[1, :4], y[1, :4], **TOL)
    # A bidirectional row padded after its length: its real positions never see the padding.
    torch.testing.assert_close(encode(m, x3, torch.tensor([4, 4, 4]))[0][1, :4],
                               encode(m, x, torch.tensor([4, 4, 4]))[0][1, :4], **TOL)


RECURRENT = [n for n in NAMES if n != "attention"]


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_mixers_are_the_forward_run_beside_the_reversed_run(name):
    torch.manual_seed(2)
    m = make(name)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, _ = encode(m, x, PREFIX)
    fwd, _ = forward(m, x)
    for b, p in enumerate(PREFIX.tolist()):
        if p == 0:
            torch.testing.assert_close(y[b], fwd[b], **TOL)
            continue
        bwd, _ = forward(m, x[b:b + 1, :p].flip(1))
        want = torch.cat([(fwd[b, :p] + bwd[0].flip(0)) / 2, fwd[b, p:]])
        torch.testing.assert_close(y[b], want, **TOL)


@pytest.mark.parametrize("window", [None, 3])
def test_attention_equals_an_explicit_masked_softmax(window):
    torch.manual_seed(3)
    m = seqlab.mixers.build("attention", dim=DIM, heads=4, window=window).double()
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    y, cache = m.encode(x, PREFIX)
    H, hd = 4, DIM // 4
    q = m.q_proj(x).view(B, T, H, hd).transpose(1, 2)
    k = m.k_proj(x).view(B, T, H, hd).transpose(1, 2)
    v = m.v_proj(x).view(B, T, H, hd).transpose(1, 2)
    cos, sin = rotary_angles(torch.arange(T)[None], hd, 10000.0, dtype=torch.float64)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = torch.empty(B, H, T, hd, dtype=torch.float64)
    for b, p in enumerate(PREFIX.tolist()):
        for i in range(T):
            keys = [j for j in range(T) if (j <= i or (i < p and j < p))
                    and (window is None or abs(i - j) < window)]
            w = torch.softmax(q[b, :, i, None] @ k[b, :, keys].transpose(-1, -2) / hd ** 0.5, -1)
            out[b, :, i] = (w @ v[b, :, keys])[:, 0]
    torch.testing.assert_close(y, m.o_proj(out.transpose(1, 2).reshape(B, T, DIM)), **TOL)
    assert cache.lengths == (T,) * B


@pytest.mark.parametrize("name", NAMES)
def test_a_prefix_lm_continues_causally_from_the_returned_state(name):
    """Feeding one more token after ``encode(x, prefix)`` equals encoding x and the token."""
    torch.manual_seed(4)
    m = make(name)
    mixer = getattr(m, "mixer", m)
    x = torch.randn(B, T + 1, DIM, dtype=torch.float64)
    p = torch.tensor([5, 2, 0])
    whole, _ = encode(m, x, p)
    _, state = encode(m, x[:, :T], p)
    kw = {"tokens": token_ids(x[:, T])} if mixer.needs_tokens else {}
    last, _ = mixer.step(x[:, T], state, **kw)
    torch.testing.assert_close(last, whole[:, T], **TOL)


def test_reverse_within_is_an_involution_that_keeps_the_tail():
    x = torch.arange(12).view(2, 6)
    r = reverse_within(x, torch.tensor([4, 0]))
    assert r.tolist() == [[3, 2, 1, 0, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert torch.equal(reverse_within(r, torch.tensor([4, 0])), x)


@pytest.mark.parametrize("bad, match", [(12, r"\[0, 11\]"), (-1, r"\[0, 11\]"),
                                        (1.5, "int"), ([1, 2], "one per row")])
def test_bad_prefixes_are_named(bad, match):
    m = seqlab.mixers.build("mamba", dim=DIM)
    with pytest.raises(ValueError, match=match):
        m.encode(torch.randn(B, T, DIM), bad)

"""The C++ selective scan against the pure-PyTorch scan it replaces, and the mixer with it.

The reference is ``seqlab.mixers.mamba.selective_scan``. Every test that runs the kernel
takes the module-scoped ``kernel`` fixture, so the extension is built (or loaded from
torch's cache) once, before the first of them.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.mixers.mamba import selective_scan
from seqlab.ops import selective_scan_cpu as ops
from seqlab.ops.selective_scan_cpu import selective_scan_cpu
from tests.mixers.test_conformance import assert_states_close, chunkings, run_chunks

F64 = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)
NAMES = ("dt", "A", "B", "C", "x", "h0")


@pytest.fixture(scope="module")
def kernel():
    start = time.perf_counter()
    module = ops.load()
    print(f"selective_scan_cpu ready in {time.perf_counter() - start:.1f} s")
    return module


def scan_inputs(batch, length, E, N, dtype=F64, h0_scale=1.0):
    """Inputs as the mixer makes them: dt > 0, A < 0; all require grad."""
    dt = torch.rand(batch, length, E, dtype=dtype) * 0.5 + 0.05
    A = -torch.rand(E, N, dtype=dtype) * 2 - 0.1
    Bm, Cm = torch.randn(batch, length, N, dtype=dtype), torch.randn(batch, length, N, dtype=dtype)
    x = torch.randn(batch, length, E, dtype=dtype)
    h0 = torch.randn(batch, E, N, dtype=dtype) * h0_scale
    return tuple(t.requires_grad_() for t in (dt, A, Bm, Cm, x, h0))


def outputs_and_grads(fn, inputs, gy, gh):
    y, h = fn(*inputs)
    loss = 0
    if gy is not None:
        loss = loss + (y * gy).sum()
    if gh is not None:
        loss = loss + (h * gh).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return y, h, grads


def assert_matches_reference(inputs, checkpoint, tol, use=("y", "h")):
    y, h = selective_scan(*inputs, 5)
    gy = torch.randn_like(y) if "y" in use else None
    gh = torch.randn_like(h) if "h" in use else None
    y_ref, h_ref, g_ref = outputs_and_grads(lambda *a: selective_scan(*a, 5), inputs, gy, gh)
    y_k, h_k, g_k = outputs_and_grads(lambda *a: selective_scan_cpu(*a, checkpoint=checkpoint),
                                      inputs, gy, gh)
    torch.testing.assert_close(y_k, y_ref, **tol)
    torch.testing.assert_close(h_k, h_ref, **tol)
    for name, a, b in zip(NAMES, g_k, g_ref):
        torch.testing.assert_close(a, b, **tol, msg=lambda e: f"d{name}: {e}")


# -- the kernel alone ------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 7, 100], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("checkpoint", [64, 7, 1], ids=lambda k: f"ckpt{k}")
def test_float64_matches_reference(kernel, length, checkpoint):
    # E = 19: two full blocks of 8 float64 channels and a ragged one of 3.
    inputs = scan_inputs(batch=3, length=length, E=19, N=5)
    assert_matches_reference(inputs, checkpoint, TOL)


@pytest.mark.parametrize("use", [("y",), ("h",)], ids=["y-only", "h-only"])
def test_one_output_used(kernel, use):
    """The other output's gradient arrives as None; it must count as zero."""
    assert_matches_reference(scan_inputs(2, 30, 8, 3), 8, TOL, use=use)


@pytest.mark.parametrize("E", [16, 40], ids=["E16", "E40"])
def test_float32_close_to_reference(kernel, E):
    # E = 40: two full blocks of 16 float32 lanes and a ragged one of 8.
    inputs = tuple(t.detach().float().requires_grad_() for t in scan_inputs(2, 150, E, 16))
    assert_matches_reference(inputs, 64, dict(atol=2e-4, rtol=1e-4))


def test_gradcheck(kernel):
    inputs = scan_inputs(batch=2, length=9, E=3, N=2)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_cpu(*a, checkpoint=4), inputs)


def test_empty_sequence_passes_the_state_through(kernel):
    inputs = scan_inputs(batch=2, length=0, E=5, N=3)
    y, h = selective_scan_cpu(*inputs)
    assert y.shape == (2, 0, 5)
    torch.testing.assert_close(h, inputs[-1], **TOL)
    assert h.data_ptr() != inputs[-1].data_ptr()
    gh = torch.randn_like(h)
    (g_h0,) = torch.autograd.grad((h * gh).sum(), inputs[-1])
    torch.testing.assert_close(g_h0, gh, **TOL)


def test_large_decays_stay_finite(kernel):
    """dt * A down to -5000: the float32 exp must give 0, not garbage, below its range."""
    dt, A, Bm, Cm, x, h0 = (t.detach().float() for t in scan_inputs(2, 20, 16, 4))
    y, h = selective_scan_cpu(dt * 100, A * 25, Bm, Cm, x, h0)
    y_ref, h_ref = selective_scan(dt * 100, A * 25, Bm, Cm, x, h0, 5)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-4)


def test_nan_is_not_hidden(kernel):
    dt, A, Bm, Cm, x, h0 = (t.detach().float() for t in scan_inputs(1, 6, 16, 4))
    dt[0, 2, 3] = float("nan")
    y, h = selective_scan_cpu(dt, A, Bm, Cm, x, h0)
    assert y[0, 2:, 3].isnan().all() and h[0, 3].isnan().all()
    assert not y[0, :2].isnan().any() and not y[0, :, 4:].isnan().any()


@pytest.mark.parametrize("threads", [1, 3], ids=["threads1", "threads3"])
def test_thread_count_changes_nothing(kernel, threads):
    inputs = scan_inputs(batch=3, length=50, E=45, N=3)
    gy, gh = torch.randn(3, 50, 45, dtype=F64), torch.randn(3, 45, 3, dtype=F64)
    fn = lambda *a: selective_scan_cpu(*a, checkpoint=16)   # noqa: E731
    default = torch.get_num_threads()
    expected = outputs_and_grads(fn, inputs, gy, gh)
    torch.set_num_threads(threads)
    try:
        got = outputs_and_grads(fn, inputs, gy, gh)
    finally:
        torch.set_num_threads(default)
    for a, b in zip([*got[:2], *got[2]], [*expected[:2], *expected[2]]):
        torch.testing.assert_close(a, b, **TOL)


def test_bfloat16_is_computed_in_float32(kernel):
    inputs = [t.detach().bfloat16() for t in scan_inputs(2, 40, 16, 4)]
    y, h = selective_scan_cpu(*inputs)
    assert y.dtype == h.dtype == torch.bfloat16
    y32, h32 = selective_scan_cpu(*(t.float() for t in inputs))
    torch.testing.assert_close(y, y32.bfloat16())
    torch.testing.assert_close(h, h32.bfloat16())


def test_other_devices_are_refused():
    inputs = [t.detach().to("meta") for t in scan_inputs(1, 4, 3, 2)]
    with pytest.raises(ValueError, match="CPU only.*meta.*scan = 'torch'"):
        selective_scan_cpu(*inputs)


def test_build_failure_names_the_cause_and_the_alternative(monkeypatch):
    from torch.utils import cpp_extension

    def fail(**kwargs):
        raise OSError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load_inline", fail)
    ops.load.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="(?s)no compiler here.*scan = 'torch'"):
            ops.load()
    finally:
        ops.load.cache_clear()


# -- the mixer with scan = "cpp" -------------------------------------------------------

DIM, B, T = 32, 3, 23


def make(scan="cpp", dtype=F64, **options):
    """The mamba mixer as the conformance suite builds it, with the chosen scan."""
    torch.manual_seed(1)
    opts = {**seqlab.mixers.get("mamba").example_options, **options, "scan": scan}
    m = seqlab.mixers.build("mamba", dim=DIM, **opts).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_config_field():
    assert seqlab.mixers.build("mamba", dim=8).cfg.scan == "torch"
    assert "scan=cpp" in repr(seqlab.mixers.build("mamba", dim=8, scan="cpp"))
    with pytest.raises(ConfigError, match="scan = 'fast'.*'torch', 'cpp'"):
        seqlab.mixers.build("mamba", dim=8, scan="fast")


def test_mixer_step_equals_parallel(kernel):
    m = make()
    x = torch.randn(B, T, DIM, dtype=F64)
    y_full, s_full = m(x)
    s, ys = m.init_state(B, dtype=F64), []
    for t in range(T):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, **TOL)
    assert_states_close(s, s_full)


def test_mixer_chunked_equals_whole(kernel):
    m = make()
    x = torch.randn(B, T, DIM, dtype=F64)
    y_full, s_full = m(x)
    for sizes in chunkings(T, seed=7):
        y, s = run_chunks(m, x, sizes, m.init_state(B, dtype=F64))
        torch.testing.assert_close(y, y_full, **TOL, msg=lambda e: f"chunks {sizes}: {e}")
        assert_states_close(s, s_full)


def test_mixer_outputs_and_gradients_match_torch_scan(kernel):
    m_t, m_c = make("torch"), make("cpp")
    m_c.load_state_dict(m_t.state_dict())
    x = torch.randn(B, 100, DIM, dtype=F64)
    with torch.no_grad():
        _, start = m_t(torch.randn(B, 9, DIM, dtype=F64))   # a non-zero starting state
    results = []
    for m in (m_t, m_c):
        xg = x.clone().requires_grad_()
        y, s = m(xg, start)
        (y.square().sum() + s.h.sum()).backward()
        results.append((y, s, xg.grad, {n: p.grad for n, p in m.named_parameters()}))
    (y_t, s_t, gx_t, gp_t), (y_c, s_c, gx_c, gp_c) = results
    torch.testing.assert_close(y_c, y_t, **TOL)
    assert_states_close(s_c, s_t)
    torch.testing.assert_close(gx_c, gx_t, **TOL)
    for name in gp_t:
        torch.testing.assert_close(gp_c[name], gp_t[name], **TOL, msg=lambda e: f"{name}: {e}")


def test_mixer_float32_and_bfloat16(kernel):
    m64 = make()
    x = torch.randn(B, T, DIM, dtype=F64)
    y64, _ = m64(x)
    y32, _ = copy.deepcopy(m64).float()(x.float())
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-3)
    y16, s16 = copy.deepcopy(m64).bfloat16()(x.bfloat16())
    assert y16.dtype == s16.h.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=0.05, rtol=0.05)


def test_mixer_on_another_device_says_use_torch_scan():
    m = make().to("meta")
    with pytest.raises(ValueError, match="scan = 'torch'"):
        m(torch.randn(B, 5, DIM, dtype=F64, device="meta"))

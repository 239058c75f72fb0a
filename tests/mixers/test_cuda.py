"""Every mixer and the LM on a CUDA device: same numbers as on CPU, both faces.

Skipped where no CUDA device is present (see conftest.py).
"""

import copy

import pytest
import torch

import seqlab
from tests.mixers.token_ids import with_tokens

pytestmark = pytest.mark.gpu
NAMES = seqlab.mixers.names()


def pair(name):
    cls = seqlab.mixers.get(name)
    cpu = with_tokens(seqlab.mixers.build(name, dim=64, **cls.example_options).double())
    return cpu, copy.deepcopy(cpu).cuda()


@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu_and_faces_agree(name):
    cpu, gpu = pair(name)
    x = torch.randn(3, 37, 64, dtype=torch.float64)
    y_cpu, _ = cpu(x)
    y_gpu, s = gpu(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-6, rtol=1e-6)
    s2, ys = gpu.init_state(3, dtype=torch.float64), []
    for t in range(37):
        y_t, s2 = gpu.step(x[:, t].cuda(), s2)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1).cpu(), y_cpu, atol=1e-6, rtol=1e-6)
    half, s3 = gpu(x[:, :20].cuda())
    rest, _ = gpu(x[:, 20:].cuda(), s3.select(torch.arange(3, device="cuda")))
    torch.testing.assert_close(torch.cat([half, rest], 1).cpu(), y_cpu, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_cuda_bf16_autocast_training_step(name):
    _, gpu = pair(name)
    gpu = gpu.float()
    x = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = gpu(x)
    y.float().pow(2).mean().backward()
    assert torch.isfinite(y.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())


def test_cuda_lm_two_faces():
    model = seqlab.models.build_lm(vocab_size=64, dim=64, layers=NAMES,
                                   mixer_options={n: seqlab.mixers.get(n).example_options
                                                  for n in NAMES}).double().cuda()
    tokens = torch.randint(0, 64, (2, 25), device="cuda")
    full, _ = model(tokens)
    state, outs = model.init_state(2), []
    for t in range(25):
        o, state = model.step(tokens[:, t], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), full, atol=1e-6, rtol=1e-6)

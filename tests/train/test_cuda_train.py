"""Training on a CUDA device with bfloat16 autocast; the checkpoint loads on CPU."""

import pytest
import torch

from seqlab.models import load
from seqlab.train.checkpoint import latest_checkpoint
from seqlab.train.trainer import Trainer

from .conftest import tiny_run

pytestmark = pytest.mark.gpu


def test_cuda_bf16_training_and_cpu_reload(small_corpus, tmp_path):
    run = tiny_run(small_corpus, tmp_path / "run", steps=30, lr=1e-2, device="cuda", eval_every=0)
    t = Trainer(run, progress=False)
    assert t.amp == torch.bfloat16 and t.device.type == "cuda"
    r = t.fit()
    assert r.stopped == "done" and r.losses[-1] < r.losses[0] - 0.5
    cpu = load(latest_checkpoint(tmp_path / "run"))
    x = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        a = cpu(x)[0]
        b = t.model.float()(x.cuda())[0].cpu()
    torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)

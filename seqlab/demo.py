"""A short demonstration of the two-face contract on real text.

The training issue replaces this with the full ``seqlab demo`` (train a hybrid
byte model on the standard library and stream a continuation).
"""

from __future__ import annotations

import inspect
import textwrap
import time

import torch

import seqlab


def run_demo(dim: int = 64, length: int = 256) -> int:
    torch.manual_seed(0)
    text = inspect.getsource(textwrap).encode()[:length]
    tokens = torch.tensor(list(text))[None]                        # (1, T) bytes
    layers = seqlab.mixers.names()
    model = seqlab.models.build_lm(vocab_size=256, dim=dim, layers=layers).eval()
    print(f"seqlab {seqlab.__version__}: a {len(layers)}-layer hybrid byte LM "
          f"({model.num_parameters():,} parameters), one layer of each mixer: {', '.join(layers)}")
    print(f"text: {len(text)} bytes of {textwrap.__file__}")
    with torch.no_grad():
        t0 = time.perf_counter()
        logits, _ = model(tokens)
        t_par = time.perf_counter() - t0
        state, steps = model.init_state(1), []
        t0 = time.perf_counter()
        for t in range(tokens.shape[1]):
            out, state = model.step(tokens[:, t], state)
            steps.append(out)
        t_rec = time.perf_counter() - t0
    diff = (torch.stack(steps, 1) - logits).abs().max().item()
    print(f"parallel face : {t_par * 1e3:8.1f} ms for {len(text)} tokens")
    print(f"recurrent face: {t_rec * 1e3:8.1f} ms ({t_rec / len(text) * 1e3:.2f} ms/token)")
    print(f"max |logit difference| between the faces: {diff:.2e}")
    print("state bytes per sequence, by layer (float32):")
    for block in model.blocks:
        sizes = "  ".join(f"L={n}: {block.mixer.state_size(n) * 4:>9,}" for n in (256, 4096, 65536))
        print(f"  {block.mixer.name:18s} {sizes}")
    ok = diff < 1e-3
    print("the two faces agree" if ok else "MISMATCH between the faces")
    return 0 if ok else 1

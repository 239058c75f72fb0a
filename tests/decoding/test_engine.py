"""The engine's shared pieces: prefill's last-position logits and joined states."""

import torch

from seqlab.decoding.engine import prefill
from seqlab.models import build_lm


def test_prefill_gives_the_last_positions_logits_and_states_that_continue_exactly():
    torch.manual_seed(0)
    model = build_lm(vocab_size=11, dim=16, layers=["attention", "mamba"], mlp_hidden=32,
                     mixer_options={"attention": {"heads": 2}}).double().eval()
    rows = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 1, 2, 3]]        # ragged: one call per row
    with torch.no_grad():
        logits, state, calls = prefill(model, rows)
        assert calls == 3 and logits.shape == (3, 11)
        for b, r in enumerate(rows):
            full, _ = model(torch.tensor([r]))
            torch.testing.assert_close(logits[b], full[0, -1])
        # The joined state carries on as if each row had been run alone.
        step_logits, _ = model.step(torch.tensor([4, 5, 6]), state)
        for b, (r, nxt) in enumerate(zip(rows, [4, 5, 6])):
            full, _ = model(torch.tensor([r + [nxt]]))
            torch.testing.assert_close(step_logits[b], full[0, -1])
        same, _, one_call = prefill(model, [[1, 2, 3], [4, 5, 6]])
        assert one_call == 1
        torch.testing.assert_close(same, model(torch.tensor([[1, 2, 3], [4, 5, 6]]))[0][:, -1])

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


def test_on_token_returning_true_ends_that_row_only():
    """A caller (a server whose client left, a per-row budget) ends one row of a batch; the
    other rows go on exactly as without it, for every streaming strategy."""
    from seqlab.decoding import generate

    torch.manual_seed(0)
    model = build_lm(vocab_size=13, dim=16, layers=["attention", "gru"], mlp_hidden=32,
                     mixer_options={"attention": {"heads": 2}}).double().eval()
    draft = build_lm(vocab_size=13, dim=8, layers=["gru"], mlp_hidden=16).double().eval()
    rows = [[1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5], [7, 8, 9]]
    full = generate(model, rows, "greedy", 12).tokens
    for strategy, kw in [("greedy", {}), ("sample", {"temperature": 0}), ("prompt-lookup", {}),
                         ("ngram", {}), ("speculative", {"draft": draft}),
                         ("tree", {"draft": draft})]:
        seen = []

        def stop_row_1_after_3(row, token):
            seen.append(row)
            return row == 1 and seen.count(1) == 3

        out = generate(model, rows, strategy, 12, on_token=stop_row_1_after_3, **kw).tokens
        assert out[1] == full[1][:3], strategy
        assert (out[0], out[2]) == (full[0], full[2]), strategy
        assert seen.count(1) == 3, strategy


def test_cached_prefix_states_decode_as_the_full_prompt():
    """A row whose first n tokens are already in a kept state decodes as if run in full."""
    import pytest

    from seqlab.decoding import PromptError, generate

    torch.manual_seed(1)
    model = build_lm(vocab_size=13, dim=16, layers=["attention", "gru"], mlp_hidden=32,
                     mixer_options={"attention": {"heads": 2}}).double().eval()
    draft = build_lm(vocab_size=13, dim=8, layers=["gru"], mlp_hidden=16).double().eval()
    rows = [[1, 2, 3, 1, 2, 3, 4], [4, 5, 6, 4, 5], [7, 8, 9, 10]]
    with torch.no_grad():
        kept = model(torch.tensor([rows[0][:5]]))[1]
        kept2 = model(torch.tensor([rows[2][:1]]))[1]
    cached = [(5, kept), None, (1, kept2)]
    for strategy, kw in [("greedy", {}), ("beam", {"num_beams": 3}), ("prompt-lookup", {}),
                         ("speculative", {"draft": draft})]:
        full = generate(model, rows, strategy, 10, **kw)
        part = generate(model, rows, strategy, 10, cached=cached, **kw)
        assert part.tokens == full.tokens, strategy
    with pytest.raises(PromptError, match="at least the prompt's last token"):
        generate(model, rows, "greedy", 4, cached=[(7, kept), None, None])

"""Hidden-state optimisation: the state fits the recent tokens better, the weights and the
caller's state stay as they were, and no steps is the plain state."""

import pytest
import torch

from seqlab.decoding.hidden_state import optimize_state
from seqlab.models.lm import build_lm


@pytest.fixture(params=["attention(heads=2)+mamba(d_state=4)", "gru+attention(heads=2)"])
def model(request):
    torch.manual_seed(0)
    return build_lm(vocab_size=32, dim=32, layers=request.param).eval()


def test_steps_lower_the_recent_loss_and_leave_the_weights(model):
    past, recent = list(range(10)), [3, 7, 3, 7, 3, 7]
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    state, losses = optimize_state(model, past, recent, steps=8, lr=5e-2)
    assert len(losses) == 9 and losses[-1] < losses[0] - 0.1
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    # The returned state gives the last reported loss when it reads recent again.
    logits, _ = model(torch.tensor([recent]), state)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(recent[1:]))
    assert nll.item() == pytest.approx(losses[-1], rel=1e-5)


def test_zero_steps_is_the_plain_state_and_the_callers_state_is_kept(model):
    past, recent = [1, 2, 3, 4], [5, 6, 7]
    plain, losses = optimize_state(model, past, recent, steps=0)
    _, want = model(torch.tensor([past]))
    ref, _ = model(torch.tensor([recent]), want)
    got, _ = model(torch.tensor([recent]), plain)
    torch.testing.assert_close(got, ref)
    _, start = model(torch.tensor([past[:2]]))
    before = model(torch.tensor([recent]), start)[0]
    optimize_state(model, past[2:], recent, state=start, steps=3, lr=1e-1)
    torch.testing.assert_close(model(torch.tensor([recent]), start)[0], before)


def test_only_scored_positions_count(model):
    past, recent = [1, 2, 3, 4], [5, 6, 7, 8]
    _, all_losses = optimize_state(model, past, recent, steps=0)
    _, one = optimize_state(model, past, recent, scored=[False, False, False, True], steps=0)
    logits, _ = model(torch.tensor([past + recent]))
    want = torch.nn.functional.cross_entropy(logits[0, -2:-1], torch.tensor([8])).item()
    assert one[0] == pytest.approx(want, rel=1e-5) and one[0] != pytest.approx(all_losses[0])


def test_bad_arguments_are_named(model):
    with pytest.raises(ValueError, match="at least one token"):
        optimize_state(model, [1, 2], [])
    with pytest.raises(ValueError, match="one flag per recent token"):
        optimize_state(model, [1, 2], [3, 4], scored=[True])
    with pytest.raises(ValueError, match="read, not predicted"):
        optimize_state(model, [1, 2], [3, 4], scored=[True, False])
    with pytest.raises(ValueError, match="no state to optimise"):
        optimize_state(model, [], [3, 4])

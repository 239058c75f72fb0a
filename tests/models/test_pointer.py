"""PointerNet: both faces agree, masks hold, and the decoding engine drives it."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.decoding import generate
from seqlab.models.pointer import (IGNORE, PointerNet, PointerNetConfig, PointerState, decode,
                                   teacher_forcing)
from seqlab.state import StateError

MAX_N = 9


def make(mask_visited=False, layers=("lstm",), seed=0):
    torch.manual_seed(seed)
    cfg = PointerNetConfig(max_n=MAX_N, in_dim=2, dim=16, encoder_layers=layers,
                           decoder_layers=layers, mask_visited=mask_visited)
    return PointerNet(cfg).double().eval()


def instances(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 6, 2, generator=g, dtype=torch.float64), torch.tensor([6, 4, 5])


# Teacher-forced outputs of the three instances (n = 6, 4, 5): permutations, then the end.
TARGETS = [[2, 0, 5, 1, 4, 3, MAX_N], [3, 1, 0, 2, MAX_N], [4, 0, 1, 3, 2, MAX_N]]


@pytest.mark.parametrize("layers", [("lstm",), ("attention(heads=2)", "gru")],
                         ids=["lstm", "attention-gru"])
@pytest.mark.parametrize("mask_visited", [False, True], ids=["open", "visited"])
def test_parallel_equals_step_by_step_and_chunks(layers, mask_visited):
    model = make(mask_visited, layers)
    points, n = instances()
    inputs, labels = teacher_forcing(TARGETS, MAX_N)
    state = model.condition(points, n)
    with torch.no_grad():
        full, s_full = model(inputs, state)
        s, steps = state, []
        for t in range(inputs.shape[1]):
            logits, s = model.step(inputs[:, t], s)
            steps.append(logits)
        head, s_head = model(inputs[:, :3], state)
        tail, s_tail = model(inputs[:, 3:], s_head)
    torch.testing.assert_close(torch.stack(steps, 1), full)
    torch.testing.assert_close(torch.cat([head, tail], 1), full)
    assert torch.equal(s.visited, s_full.visited) and torch.equal(s_tail.visited, s_full.visited)
    last, _ = model(inputs, state, last_only=True)
    torch.testing.assert_close(last, full[:, -1])
    loss = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(),
                                             ignore_index=IGNORE)
    assert torch.isfinite(loss)


def test_padding_does_not_reach_the_bidirectional_encoder():
    """A row of n points encodes the same alone as padded in a batch of larger rows."""
    model = make()
    points, n = instances()
    batch = model.condition(points, n)
    for b in range(3):
        alone = model.condition(points[b:b + 1, :n[b]])
        torch.testing.assert_close(batch.enc[b:b + 1], alone.enc)
        torch.testing.assert_close(batch.keys[b:b + 1], alone.keys)
        torch.testing.assert_close(batch.summary[b:b + 1], alone.summary)


def test_positions_beyond_n_never_get_probability():
    model = make()
    points, n = instances()
    inputs, _ = teacher_forcing(TARGETS, MAX_N)
    probs = model(inputs, model.condition(points, n))[0].softmax(-1)   # (3, T, MAX_N + 1)
    for b in range(3):
        assert (probs[b, :, n[b]:MAX_N] == 0).all()
        assert (probs[b, :, :n[b]] > 0).all() and (probs[b, :, MAX_N] > 0).all()


def test_visited_mask_closes_pointed_positions_and_the_end_until_all_are_used():
    model = make(mask_visited=True)
    points, n = instances()
    inputs, _ = teacher_forcing(TARGETS, MAX_N)
    probs = model(inputs, model.condition(points, n))[0].softmax(-1)
    for b, target in enumerate(TARGETS):
        for t in range(len(target)):
            used = set(inputs[b, 1:t + 1].tolist())
            open_ = [j for j in range(int(n[b])) if j not in used]
            assert (probs[b, t, sorted(used)] == 0).all() if used else True
            assert (probs[b, t, open_] > 0).all()
            assert (probs[b, t, MAX_N] > 0) == (not open_)


def test_empty_state_is_the_empty_instance():
    model = make()
    logits, state = model(torch.full((2, 1), MAX_N))
    assert isinstance(state, PointerState)
    assert logits.softmax(-1)[:, 0, MAX_N].tolist() == [1.0, 1.0]


def manual_greedy(model, points, n):
    out = []
    with torch.no_grad():
        for b in range(points.shape[0]):
            s = model.condition(points[b:b + 1], n[b:b + 1])
            token, row = torch.tensor([MAX_N]), []
            while (not row or row[-1] != MAX_N) and len(row) < MAX_N + 1:   # decode's limit
                logits, s = model.step(token, s)
                token = logits.argmax(-1)
                row.append(int(token))
            out.append(row)
    return out


@pytest.mark.parametrize("mask_visited", [False, True], ids=["open", "visited"])
def test_engine_greedy_equals_argmax_loop_and_one_beam(mask_visited):
    model = make(mask_visited, seed=3)
    points, n = instances(1)
    expected = manual_greedy(model, points, n)
    greedy = decode(model, points, "greedy", n=n).tokens
    assert greedy == expected
    assert decode(model, points, "beam", n=n, num_beams=1).tokens == expected
    if mask_visited:
        assert all(sorted(r[:-1]) == list(range(k)) for r, k in zip(greedy, n.tolist()))
    beams = decode(model, points, "beam", n=n, num_beams=3).tokens
    for r, k in zip(beams, n.tolist()):   # untrained: a row may run to the limit
        assert all(t < k for t in r if t != MAX_N) and (r[-1] == MAX_N or len(r) == MAX_N + 1)
        if mask_visited:
            assert sorted(r[:-1]) == list(range(k)) and r[-1] == MAX_N


def test_engine_starts_from_a_conditioned_state_through_cached():
    """decode is generate with cached rows; the same call made by hand gives the same."""
    model = make(seed=4)
    points, n = instances(2)
    state = model.condition(points, n)
    rows = [[MAX_N, MAX_N]] * 3
    out = generate(model, rows, "greedy", MAX_N + 1, eos_id=MAX_N,
                   cached=[(1, state.select([b])) for b in range(3)])
    assert out.tokens == decode(model, points, "greedy", n=n).tokens


def test_bad_config_and_inputs_are_named():
    with pytest.raises(ConfigError, match="PointerNetConfig.max_n = 0"):
        PointerNetConfig(max_n=0)
    with pytest.raises(ConfigError, match="PointerNetConfig.decoder_layers"):
        PointerNetConfig(decoder_layers=())
    with pytest.raises(ConfigError, match="PointerNetConfig.mlp_hidden = -1"):
        PointerNetConfig(mlp_hidden=-1)
    model = make()
    with pytest.raises(ValueError, match="exceed PointerNetConfig.max_n = 9"):
        model.condition(torch.rand(1, 10, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"points must be \(batch, n, 2\)"):
        model.condition(torch.rand(1, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"one length in \[0, 5\]"):
        model.condition(torch.rand(2, 5, 2, dtype=torch.float64), [5, 6])
    state = model.condition(torch.rand(2, 5, 2, dtype=torch.float64), [5, 3])
    with pytest.raises(ValueError, match="points at an input beyond the instance's n = 3"):
        model(torch.tensor([[MAX_N, 1], [MAX_N, 4]]), state)
    with pytest.raises(ValueError, match="points at an input beyond the instance's n = 3"):
        model(torch.tensor([[MAX_N], [4]]), state, last_only=True)
    with pytest.raises(StateError, match="state.select"):
        model.step(torch.tensor([MAX_N]), state)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.step(torch.tensor([MAX_N + 1, 0]), state)

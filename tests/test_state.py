"""The generic State machinery: select, clone, cat, nbytes, truncate refusal."""

from dataclasses import dataclass

import pytest
import torch

from seqlab.state import State, StateError


@dataclass(frozen=True)
class Toy(State):
    h: torch.Tensor
    c: torch.Tensor
    pos: int = 3


def toy(b=3):
    return Toy(torch.arange(b * 2.0).view(b, 2), torch.arange(b * 4.0).view(b, 2, 2))


def test_select_gathers_rows_and_keeps_plain_fields():
    s = toy().select(torch.tensor([2, 2, 0, 1]))
    assert s.batch_size == 4 and s.pos == 3
    assert s.h[:, 0].tolist() == [4.0, 4.0, 0.0, 2.0]
    assert s.select([1]).c.shape == (1, 2, 2)


def test_clone_shares_no_storage():
    s = toy()
    c = s.clone()
    c.h.add_(1)
    assert s.h[0, 0] == 0 and c.h[0, 0] == 1


def test_cat_and_nbytes():
    s = toy()
    j = Toy.cat([s.select([0]), s.select([1, 2])])
    assert torch.equal(j.h, s.h) and torch.equal(j.c, s.c)
    assert s.nbytes() == (6 + 12) * 4
    with pytest.raises(StateError, match="plain fields differ"):
        Toy.cat([s, Toy(s.h, s.c, pos=4)])


def test_recurrent_state_refuses_to_truncate():
    with pytest.raises(StateError, match="cannot rewind"):
        toy().truncate(1)


def test_states_are_immutable():
    with pytest.raises(Exception):
        toy().h = torch.zeros(1)

"""Conditioned decoding: weight 0 is the model, both faces agree, a head that rules a token
out keeps every strategy from emitting it, and a trained head separates the labels."""

import pytest
import torch

import seqlab
from seqlab.decoding.conditioned import AcceptabilityHead, Conditioned, degenerate, train_head
from seqlab.models.lm import build_lm

V = 24


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_lm(vocab_size=V, dim=32, layers="attention(heads=2)+gru").double().eval()


def test_degenerate_names_loops_and_empty_outputs():
    assert degenerate([1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert not degenerate([1, 2, 3, 4, 5, 6, 1, 2, 3])
    assert degenerate([], min_length=1) and not degenerate([5], min_length=1)


def test_weight_zero_is_the_model_and_the_faces_agree(model):
    head = AcceptabilityHead(model.embed.weight).double()
    with torch.no_grad():
        head.proj.weight.normal_()
    tokens = torch.randint(0, V, (3, 9))
    plain = Conditioned(model, head, weight=0.0)
    torch.testing.assert_close(plain(tokens)[0], torch.log_softmax(model(tokens)[0], -1))
    cond = Conditioned(model, head)
    whole, _ = cond(tokens)
    state = cond.init_state(3)
    for t in range(9):
        step, state = cond.step(tokens[:, t], state)
        torch.testing.assert_close(step, whole[:, t])


class BannedHead(torch.nn.Module):
    """P(A | v) ~ 1 for every token but ``banned`` (~ exp(-40))."""

    def __init__(self, banned: int):
        super().__init__()
        self.bias = torch.zeros(V, dtype=torch.float64)
        self.bias[banned] = -80.0

    def forward(self, hidden):
        return torch.nn.functional.logsigmoid(40.0 + self.bias).expand(*hidden.shape[:-1], V)


@pytest.mark.parametrize("strategy,options", [("greedy", {}), ("beam", {"num_beams": 3}),
                                              ("sample", {"seed": 0})])
def test_a_ruled_out_token_is_never_emitted(model, strategy, options):
    prompt = [[1, 2, 3], [4, 5]]
    plain = seqlab.decoding.generate(model, prompt, "greedy", 12).tokens
    banned = max({t for row in plain for t in row}, key=lambda t: sum(r.count(t) for r in plain))
    head = BannedHead(banned)
    out = seqlab.decoding.generate(Conditioned(model, head), prompt, strategy, 12, **options).tokens
    assert banned in {t for row in plain for t in row}
    assert all(banned not in row for row in out)


def test_a_trained_head_separates_acceptable_from_degenerate(model):
    torch.manual_seed(1)
    seqs, starts, labels = [], [], []
    for i in range(40):
        prompt = torch.randint(0, V, (4,)).tolist()
        if i % 2:
            cont = [7, 8] * 5                                   # a loop
        else:
            cont = torch.randint(9, V, (10,)).tolist()          # varied, never 7 or 8
        seqs.append(prompt + cont), starts.append(4), labels.append(not degenerate(cont))
    head = train_head(model.float(), seqs, starts, labels, steps=150, lr=1e-2)
    with torch.no_grad():
        hidden, _ = model.features(torch.tensor([seqs[0][:6]]))
        scores = head(hidden[0, -1])
    assert scores[7] < scores[12] - 0.5 and scores[8] < scores[15] - 0.5
    with pytest.raises(ValueError, match="both acceptable and degenerate"):
        train_head(model, seqs[:1], starts[:1], labels[:1])

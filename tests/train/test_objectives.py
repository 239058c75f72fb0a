"""Objectives (clm, mlm, prefix): the batches they make, and one recipe training all three."""

import math
from dataclasses import replace

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.models.io import CheckpointError, load
from seqlab.models.lm import build_lm, grow_vocab
from seqlab.train.checkpoint import latest_checkpoint
from seqlab.train.objectives import IGNORE, make_batch
from seqlab.train.trainer import Trainer, evaluate

from .conftest import TINY_BLOCK, tiny_run

WINDOW = torch.randint(0, 200, (64, 33), generator=torch.Generator().manual_seed(0))


def test_clm_is_the_shifted_window():
    b = make_batch("clm", WINDOW, 256, seed=0, step=0)
    assert torch.equal(b.inputs, WINDOW[:, :-1]) and torch.equal(b.targets, WINDOW[:, 1:])
    assert b.prefix is None


def test_mlm_masks_by_berts_recipe_and_scores_only_the_chosen():
    b = make_batch("mlm", WINDOW, 256, seed=0, step=0, mlm_probability=0.15)
    x = WINDOW[:, :-1]
    chosen = b.targets != IGNORE
    assert torch.equal(b.targets[chosen], x[chosen]) and chosen.any(1).all()
    assert 0.12 < chosen.float().mean() < 0.19
    masked = b.inputs == 256
    assert not (masked & ~chosen).any()                   # only chosen positions change
    assert torch.equal(b.inputs[~chosen], x[~chosen])
    share = masked[chosen].float().mean()
    assert 0.7 < share < 0.9                               # 80% mask id, the rest random or kept
    assert torch.equal(b.prefix, torch.full((64,), 32))   # bidirectional
    again = make_batch("mlm", WINDOW, 256, seed=0, step=0)
    other = make_batch("mlm", WINDOW, 256, seed=0, step=1)
    assert torch.equal(again.inputs, b.inputs) and not torch.equal(other.inputs, b.inputs)


def test_prefix_scores_only_tokens_the_prefix_does_not_hold():
    b = make_batch("prefix", WINDOW, 256, seed=0, step=0)
    assert ((b.prefix >= 1) & (b.prefix <= 31)).all() and len(set(b.prefix.tolist())) > 5
    for row, p in enumerate(b.prefix.tolist()):
        scored = (b.targets[row] != IGNORE).nonzero().flatten().tolist()
        assert scored == list(range(p - 1, 32))            # target p-1 is token p: unseen
        assert torch.equal(b.inputs[row], WINDOW[row, :-1])


def test_a_prefix_target_is_not_visible_to_the_model():
    """Changing the token a scored position predicts leaves that position's logits alone."""
    torch.manual_seed(0)
    model = build_lm(vocab_size=256, dim=32, layers=["attention", "mamba"]).double()
    b = make_batch("prefix", WINDOW[:4], 256, seed=0, step=0)
    logits, _ = model(b.inputs, prefix=b.prefix)
    for row, p in enumerate(b.prefix.tolist()):
        changed = b.inputs.clone()
        changed[row, p] = (changed[row, p] + 1) % 256      # the target of position p - 1
        again, _ = model(changed, prefix=b.prefix)
        torch.testing.assert_close(again[row, p - 1], logits[row, p - 1], atol=1e-10, rtol=0)


@pytest.mark.parametrize("objective", ["mlm", "prefix"])
def test_each_objective_trains_and_resumes_exactly(small_corpus, tmp_path, objective):
    run = lambda out, **kw: tiny_run(small_corpus, out, objective=objective, lr=1e-2, **kw)
    whole = Trainer(run(tmp_path / "a"), progress=False).fit()
    first = Trainer(run(tmp_path / "b"), progress=False).fit(stop_at=2)
    rest = Trainer(run(tmp_path / "b"), resume=True, progress=False).fit()
    assert first.losses + rest.losses == whole.losses
    assert whole.losses[-1] < whole.losses[0]
    model = load(latest_checkpoint(tmp_path / "a"))
    assert model.vocab_size == 256 + (objective == "mlm")  # the mask id


def test_eval_scores_the_objectives_targets_independently_of_batch_size(small_corpus, tmp_path):
    t = Trainer(tiny_run(small_corpus, tmp_path / "run", objective="mlm"), progress=False)
    a = evaluate(t.model, t.corpus, 32, 2048, 1, t.device, objective="mlm")
    b = evaluate(t.model, t.corpus, 32, 2048, 5, t.device, objective="mlm")
    assert a["bpb"] == pytest.approx(b["bpb"], rel=1e-6) and a["tokens"] == b["tokens"]
    assert 0.1 * 2048 < a["tokens"] < 0.2 * 2048        # only the masked tokens are scored
    assert a["bpb"] == pytest.approx(a["loss"] / math.log(2), rel=1e-9)
    t.close()


def test_a_decoder_goes_on_as_an_encoder_and_back(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "clm"), progress=False).fit()
    decoder = load(latest_checkpoint(tmp_path / "clm"))
    enc = Trainer(replace(tiny_run(small_corpus, tmp_path / "mlm", objective="mlm"),
                          init=str(tmp_path / "clm")), progress=False)
    assert any("grew from 256 to 257" in n for n in enc.notes)
    # The decoder's rows are kept; the mask row starts as their mean.
    torch.testing.assert_close(enc.model.embed.weight[:256], decoder.embed.weight)
    torch.testing.assert_close(enc.model.embed.weight[256], decoder.embed.weight.mean(0))
    enc.fit()
    enc.close()
    back = Trainer(replace(tiny_run(small_corpus, tmp_path / "clm2"), init=str(tmp_path / "mlm")),
                   progress=False)
    assert back.model.vocab_size == 257                   # the encoder's vocabulary stays
    assert back.fit().stopped == "done"
    back.close()


def test_resume_under_another_objective_names_the_way(small_corpus, tmp_path):
    Trainer(tiny_run(small_corpus, tmp_path / "run"), progress=False).fit(stop_at=1)
    with pytest.raises(CheckpointError, match=r"objective 'clm', not 'mlm'.*--init"):
        Trainer(tiny_run(small_corpus, tmp_path / "run", objective="mlm"), resume=True,
                progress=False)


def test_a_causal_family_refuses_mlm(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"objective = 'mlm' needs a model with a non-causal"):
        Trainer(tiny_run(small_corpus, tmp_path / "run", TINY_BLOCK, objective="mlm"),
                progress=False)


def test_grow_vocab_keeps_the_function_on_old_ids():
    torch.manual_seed(0)
    model = build_lm(vocab_size=20, dim=16, layers=["attention"]).double()
    grown = grow_vocab(model, 23)
    t = torch.randint(0, 20, (2, 7))
    torch.testing.assert_close(grown(t)[0][..., :20], model(t)[0])
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_vocab(model, 10)

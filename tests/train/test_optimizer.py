"""make_optimizer: which parameters AdamW decays."""

import copy

from seqlab.models import build_lm
from seqlab.train.config import TrainConfig
from seqlab.train.optim import make_optimizer


def decayed_names(model, **options):
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1, **options))
    ids = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_state_space_time_scales_and_embeddings_are_not_decayed():
    model = build_lm(vocab_size=11, dim=16, layers=["mamba", "s4d", "attention"], mlp_hidden=32,
                     mixer_options={"attention": {"heads": 2}})
    decayed = decayed_names(model)
    assert "blocks.0.mixer.in_proj.weight" in decayed and "blocks.2.mlp.up_proj.weight" in decayed
    for name in ("blocks.0.mixer.A_log", "blocks.0.mixer.D", "blocks.1.mixer.log_neg_A_re",
                 "blocks.1.mixer.A_im", "blocks.1.mixer.log_dt", "embed.weight"):
        assert name not in decayed
    assert "blocks.1.mixer.C" in decayed            # S4D's output projection is an ordinary weight
    assert decayed_names(copy.deepcopy(model)) == decayed   # the exemption is by name: copies keep it
    opt = make_optimizer(model, TrainConfig())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_decay_time_scales_brings_back_the_decay_of_state_space_matrices():
    model = build_lm(vocab_size=11, dim=16, layers=["mamba", "s4d"], mlp_hidden=32)
    plain, old = decayed_names(model), decayed_names(model, decay_time_scales=True)
    # every matrix a mixer exempts is decayed again (mamba's A_log, S4D's poles); vectors and
    # the embedding never are
    assert old - plain == {"blocks.0.mixer.A_log", "blocks.1.mixer.log_neg_A_re",
                           "blocks.1.mixer.A_im"}
    assert "blocks.0.mixer.D" not in old and "embed.weight" not in old

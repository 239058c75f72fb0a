"""The decoder LM obeys the two-face contract and saves/loads exactly."""

import json
import random

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.models import CheckpointError, LMState, build_lm
from seqlab.state import StateError

PATTERNS = {
    "attention": ["attention", "attention"],
    "recurrent": ["lstm", "gru"],
    "hybrid-all": seqlab.mixers.names(),
}


def small(layers, **kw):
    opts = {n: seqlab.mixers.get(n).example_options for n in set(layers)}
    m = build_lm(vocab_size=50, dim=32, layers=layers, mixer_options=opts, **kw).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("pattern", list(PATTERNS), ids=list(PATTERNS))
def test_parallel_chunked_and_step_agree(pattern):
    m = small(PATTERNS[pattern])
    tokens = torch.randint(0, 50, (3, 19))
    full, _ = m(tokens)
    # ragged chunks carrying the state
    rng, pos, state, parts = random.Random(1), 0, None, []
    while pos < 19:
        n = min(19 - pos, rng.randint(1, 6))
        out, state = m(tokens[:, pos:pos + n], state)
        parts.append(out)
        pos += n
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-6, rtol=1e-6)
    # one token at a time through step()
    state, steps = m.init_state(3, dtype=torch.float64), []
    for t in range(19):
        out, state = m.step(tokens[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-6, rtol=1e-6)


def test_state_select_and_truncate():
    m = small(["attention", "attention"])
    tokens = torch.randint(0, 50, (2, 12))
    full, _ = m(tokens)
    _, s = m(tokens[:, :8])
    assert s.can_truncate
    back = s.truncate(5)
    out, _ = m(tokens[[1, 0, 1], 5:], back.select([1, 0, 1]))
    torch.testing.assert_close(out, full[[1, 0, 1], 5:], atol=1e-6, rtol=1e-6)
    rec = small(["attention", "lstm"])
    _, s = rec(tokens)
    assert not s.can_truncate
    with pytest.raises(StateError, match="LSTMState"):
        s.truncate(3)


def test_save_load_roundtrip(tmp_path):
    m = small(["attention", "gru"]).float()
    seqlab.models.save(m, tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    m2 = seqlab.models.load(tmp_path / "ck")
    assert m2.cfg == m.cfg
    assert m2.head.weight is m2.embed.weight  # tying survives the round trip
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(m2(tokens)[0], m(tokens)[0], atol=0, rtol=0)


def test_per_layer_options_windowed_and_global_attention_and_two_mamba_widths():
    m = build_lm(vocab_size=50, dim=32, layers="attention(window=3)+attention+mamba(expand=1)+mamba",
                 mixer_options={"attention": {"heads": 2}, "mamba": {"d_state": 4, "chunk_size": 5}})
    m = m.double()
    assert [b.mixer.cfg.window for b in m.blocks[:2]] == [3, None]
    assert [b.mixer.cfg.expand for b in m.blocks[2:]] == [1, 2]
    assert m.blocks[2].mixer.in_proj.weight.shape[0] < m.blocks[3].mixer.in_proj.weight.shape[0]
    assert {b.mixer.cfg.heads for b in m.blocks[:2]} == {2}          # model-wide default
    tokens = torch.randint(0, 50, (2, 11))
    full, _ = m(tokens)
    state, steps = m.init_state(2, dtype=torch.float64), []
    for t in range(11):
        out, state = m.step(tokens[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-9, rtol=1e-9)
    # The window matters: the same weights with a global first layer give other logits.
    glob = build_lm(vocab_size=50, dim=32, layers="attention*2+mamba(expand=1)+mamba",
                    mixer_options={"attention": {"heads": 2}, "mamba": {"d_state": 4, "chunk_size": 5}})
    glob = glob.double()
    glob.load_state_dict(m.state_dict())
    assert not torch.allclose(glob(tokens)[0][:, 5:], full[:, 5:])
    torch.testing.assert_close(glob(tokens)[0][:, :3], full[:, :3])   # inside the window: equal


def test_layer_own_options_override_model_wide_defaults():
    cfg = seqlab.models.LMConfig(layers=["attention(heads=2)", {"mixer": "attention", "window": 4}],
                                 mixer_options={"attention": {"heads": 8, "window": 16}})
    assert [s.options for s in cfg.layers] == [{"heads": 2, "window": 16}, {"heads": 8, "window": 4}]
    assert cfg.to_dict()["layers"] == [{"mixer": "attention", "heads": 2, "window": 16},
                                       {"mixer": "attention", "heads": 8, "window": 4}]
    assert "mixer_options" not in cfg.to_dict()


def test_config_json_of_the_old_form_loads_and_new_saves_write_layer_specs(tmp_path):
    m = build_lm(vocab_size=50, dim=32, layers=["attention", "gru", "attention"],
                 mixer_options={"attention": {"heads": 2, "window": 6}, "gru": {"hidden": 24}})
    seqlab.models.save(m, tmp_path / "ck")
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())["config"]
    assert saved["layers"] == [{"mixer": "attention", "heads": 2, "window": 6},
                               {"mixer": "gru", "hidden": 24},
                               {"mixer": "attention", "heads": 2, "window": 6}]
    assert "mixer_options" not in saved
    # config.json as seqlab wrote it before layer specs: names plus options keyed by mixer.
    old = {"vocab_size": 50, "dim": 32, "layers": ["attention", "gru", "attention"],
           "mixer_options": {"attention": {"heads": 2, "window": 6}, "gru": {"hidden": 24}},
           "mlp_hidden": None, "norm_eps": 1e-5, "tie_embeddings": True, "init_std": 0.02,
           "max_length": None}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.safetensors").write_bytes((tmp_path / "ck" / "model.safetensors").read_bytes())
    (tmp_path / "old" / "config.json").write_text(json.dumps({"kind": "lm", "config": old}))
    loaded = seqlab.models.load(tmp_path / "old")
    assert loaded.cfg == m.cfg
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(loaded(tokens)[0], m(tokens)[0], atol=0, rtol=0)


def test_save_replaces_atomically(tmp_path):
    m = small(["gru"]).float()
    seqlab.models.save(m, tmp_path)
    seqlab.models.save(m, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "manifest.json",
                                                          "model.safetensors"]


def test_bad_checkpoints_are_named(tmp_path):
    m = small(["gru"]).float()
    seqlab.models.save(m, tmp_path / "ck")
    w = tmp_path / "ck" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        seqlab.models.load(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        seqlab.models.load(tmp_path / "nope")
    # a config that no longer matches the weights
    seqlab.models.save(m, tmp_path / "ck2")
    cfg = json.loads((tmp_path / "ck2" / "config.json").read_text())
    cfg["config"]["layers"] = cfg["config"]["layers"] * 2      # one layer more than the weights
    (tmp_path / "ck2" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "ck2" / "manifest.json").unlink()   # edited by hand: no checksums to match
    with pytest.raises(CheckpointError, match="does not match its config"):
        seqlab.models.load(tmp_path / "ck2")


def test_token_and_state_errors():
    m = small(["attention", "gru"])
    with pytest.raises(ValueError, match=r"shape \(batch, length\).*tokens\[None\]"):
        m(torch.randint(0, 50, (7,)))
    with pytest.raises(ValueError, match="int64"):
        m(torch.rand(2, 7))
    with pytest.raises(ValueError, match=r"token id 50 is outside the vocabulary \[0, 50\)"):
        m(torch.full((1, 3), 50))
    _, s = m(torch.randint(0, 50, (2, 4)))
    with pytest.raises(StateError, match="batch size 3"):
        m(torch.randint(0, 50, (3, 2)), s)
    other = small(["gru", "attention"])
    _, s_other = other(torch.randint(0, 50, (2, 4)))
    with pytest.raises(StateError, match="layer 0: attention mixer was given a GRUState"):
        m(torch.randint(0, 50, (2, 2)), s_other)
    with pytest.raises(StateError, match="3 layers but the model has 2"):
        m(torch.randint(0, 50, (2, 2)), LMState(s.layers + s.layers[:1]))


def test_config_errors_name_field_value_and_choices():
    with pytest.raises(ConfigError, match=r"unknown mixer 'mambo'; known mixers: .*mamba"):
        build_lm(layers=["mambo"])
    with pytest.raises(ConfigError, match=r"LMConfig.dim = -4 is not allowed: expected a positive int"):
        build_lm(dim=-4, layers=["gru"])
    with pytest.raises(ConfigError, match=r"no option 'heads'.*known options: hidden"):
        build_lm(layers=["gru"], mixer_options={"gru": {"heads": 2}})
    with pytest.raises(ConfigError, match=r"'attention', which is not in layers"):
        build_lm(layers=["gru"], mixer_options={"attention": {"heads": 2}})
    with pytest.raises(ConfigError, match=r"LMConfig.layers\[1\] = attention: dim = 30 does not "
                                          r"divide into heads = 4"):
        build_lm(dim=30, layers=["gru", "attention"])
    with pytest.raises(ConfigError, match=r"LMConfig.layers\[2\] = attention\(window=0\): "
                                          r"AttentionConfig.window = 0 is not allowed: expected a "
                                          r"positive int or None"):
        build_lm(layers="gru*2+attention(window=0)")
    with pytest.raises(ConfigError, match=r"LMConfig.layers\[1\] = \{'mixer': 'mamba', 'dstate': 4\}: "
                                          r"MambaConfig has no option 'dstate'; known options: d_state"):
        build_lm(layers=["gru", {"mixer": "mamba", "dstate": 4}])


def test_parameter_count_counts_tied_head_once():
    tied = build_lm(vocab_size=100, dim=32, layers=["gru"])
    untied = build_lm(vocab_size=100, dim=32, layers=["gru"], tie_embeddings=False)
    assert untied.num_parameters() - tied.num_parameters() == 100 * 32
    assert tied.num_parameters() == sum(p.numel() for p in tied.parameters())


def test_state_bytes_grow_only_with_attention():
    m = build_lm(dim=32, layers=["gru", "attention"])
    r = build_lm(dim=32, layers=["gru", "lstm"])
    assert m.state_bytes(2048) > m.state_bytes(1024)
    assert r.state_bytes(2048) == r.state_bytes(16)

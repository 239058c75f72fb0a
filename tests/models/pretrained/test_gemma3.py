"""Gemma 3 import: small random checkpoints written here as a Hugging Face folder and as a
GGUF file (as llama.cpp's converter writes one), checked against transformers'
Gemma3ForCausalLM: logits to 1e-4 in float32 and identical greedy tokens, local and
global layers with their own rotary bases, windows shorter than the prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the reference is transformers' Gemma 3")
gguf = pytest.importorskip("gguf", reason="GGUF files are written with the gguf package")

from gguf import GGMLQuantizationType as QT  # noqa: E402

from seqlab.decoding import generate  # noqa: E402
from seqlab.models.io import CheckpointError  # noqa: E402
from seqlab.models.pretrained import load_gguf, load_pretrained  # noqa: E402
from seqlab.models.pretrained import gemma3  # noqa: E402
from seqlab.tokenizer import byte_alphabet  # noqa: E402

VOCAB = 288
WINDOW = 5  # shorter than the prompts, so the local layers' windows matter


def hf_gemma3(seed=0, **overrides):
    """A random Gemma3ForCausalLM: 7 layers (the 6th global), head_dim apart from dim / heads,
    norms moved off their init so a wrong (1 + w) convention cannot hide."""
    opts = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=7,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                query_pre_attn_scalar=24, sliding_window=WINDOW, max_position_embeddings=256,
                rope_theta=50000.0, rope_local_base_freq=1000.0, rms_norm_eps=1e-6,
                pad_token_id=0, bos_token_id=None, eos_token_id=None)
    opts.update(overrides)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**opts)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.02))
    return model


def prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in (19, 11)]


@torch.no_grad()
def assert_matches(ours, ref, atol=1e-4):
    """Logits of every prompt position to ``atol``, and 12 greedy tokens per ragged row equal."""
    for p in prompts():
        ids = torch.tensor([p])
        torch.testing.assert_close(ours(ids)[0], ref(ids).logits, atol=atol, rtol=1e-4)
    out = generate(ours, prompts(), "greedy", 12)
    for p, got in zip(prompts(), out.tokens):
        ids = torch.tensor([p])
        want = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=12, min_new_tokens=12, pad_token_id=0)
        assert got == want[0, len(p):].tolist()


@pytest.mark.parametrize("overrides", [
    {},
    {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    {"layer_types": ["full_attention", "sliding_attention"] * 3 + ["full_attention"],
     "num_key_value_heads": 4, "head_dim": 16, "query_pre_attn_scalar": 16},
], ids=["default-pattern", "linear-rope-scaling", "explicit-layer-types"])
def test_hf_folder_matches_transformers(tmp_path, overrides):
    ref = hf_gemma3(**overrides)
    ref.save_pretrained(tmp_path)
    model, _ = load_pretrained(tmp_path)
    kinds = ["global" if "window" not in s.options else "local" for s in model.cfg.layers]
    assert kinds == ["global" if t == "full_attention" else "local"
                     for t in ref.config.layer_types]
    thetas = {s.options["rope_theta"] for s in model.cfg.layers}
    assert thetas == {1000.0, 50000.0}  # separate bases of local and global layers
    assert_matches(model, ref)


def test_transformers_4_config_layout(tmp_path):
    """The older config.json (rope_theta, rope_local_base_freq, rope_scaling at the top level,
    sliding_window_pattern) reads the same as transformers 5's rope_parameters."""
    ref = hf_gemma3()
    ref.save_pretrained(tmp_path)
    new, _ = load_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("rope_parameters", "layer_types"):
        cfg.pop(key, None)
    cfg.update(rope_theta=50000.0, rope_local_base_freq=1000.0, sliding_window_pattern=6)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old, _ = load_pretrained(tmp_path)
    assert old.cfg == new.cfg


def test_step_equals_parallel_float64(tmp_path):
    """The recurrent face (one token at a time through windowed caches) equals the parallel
    face in float64, over a sequence four windows long."""
    hf_gemma3().save_pretrained(tmp_path)
    model, _ = load_pretrained(tmp_path, dtype=torch.float64)
    tokens = torch.randint(1, VOCAB, (2, 4 * WINDOW))
    with torch.no_grad():
        full, _ = model(tokens)
        state, steps = model.init_state(2, dtype=torch.float64), []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("change, needle", [
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ({"hidden_activation": "relu"}, "hidden_activation"),
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
     "yarn"),
])
def test_refuses_what_it_would_compute_differently(tmp_path, change, needle):
    hf_gemma3().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=needle):
        load_pretrained(tmp_path)


# -- GGUF -------------------------------------------------------------------------------

_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def write_gemma3_gguf(path, ref, qtype=QT.F32):
    """``ref`` as llama.cpp's converter writes a Gemma 3: gemma3.* metadata, norms stored as
    1 + w, q/k rows as they are, a tied head left out; matrices in ``qtype``."""
    c = ref.config
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_freq_base(c.rope_parameters["full_attention"]["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_sliding_window(c.sliding_window)
    tokens = [byte_alphabet()[b] for b in range(256)] + ["hi"]
    tokens += [f"<unused{i}>" for i in range(VOCAB - len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [5] * (VOCAB - 257))
    w.add_token_merges(["h i"])
    for name, p in ref.state_dict().items():
        if name == "lm_head.weight":
            continue
        a = p.detach().float().numpy().copy()
        if name.endswith("norm.weight"):
            a = a + 1.0
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        else:
            _, _, i, *part, kind = name.split(".")
            g = f"blk.{i}.{_GGUF_NAMES['.'.join(part)]}.{kind}"
        if a.ndim == 1 or qtype == QT.F32:
            w.add_tensor(g, a)
        else:
            w.add_tensor(g, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_matches_transformers(tmp_path):
    # The GGUF reader, as llama.cpp does, takes query_pre_attn_scalar = head_dim and a
    # local rotary base of 10,000 (a gemma3 file stores neither).
    ref = hf_gemma3(query_pre_attn_scalar=32, rope_local_base_freq=10000.0)
    model, _ = load_gguf(write_gemma3_gguf(tmp_path / "g.gguf", ref))
    assert_matches(model, ref)


def test_gguf_quantized_q8(tmp_path):
    """Q8_0 matrices run by seqlab's kernels: with float activations the logits equal the
    dequantized float model's (the q/k norms applied before the C++ attention step) and so
    do the greedy tokens; with int8 activations the logits stay within 0.05, and the top
    token agrees at every position where the float model's top two are 0.1 apart."""
    ref = hf_gemma3(query_pre_attn_scalar=32, rope_local_base_freq=10000.0)
    path = write_gemma3_gguf(tmp_path / "q8.gguf", ref, QT.Q8_0)
    flt, _ = load_gguf(path)
    exact, _ = load_gguf(path, weights="q8", activations="float")
    fast, _ = load_gguf(path, weights="q8", activations="int8")
    assert not any(b.fused_step for b in exact.blocks)  # Gemma's layout is not the C++ block's
    want = generate(flt, prompts(), "greedy", 12).tokens
    assert generate(exact, prompts(), "greedy", 12).tokens == want
    with torch.no_grad():
        for p, more in zip(prompts(), want):
            ids = torch.tensor([p + more])  # teacher-forced along the float model's greedy path
            torch.testing.assert_close(exact(ids)[0], flt(ids)[0], atol=1e-4, rtol=1e-4)
            f, q = flt(ids)[0][0], fast(ids)[0][0]
            assert (q - f).abs().max() < 0.05
            top2 = f.topk(2, -1).values
            clear = (top2[:, 0] - top2[:, 1]) > 0.1
            assert clear.sum() >= len(p) // 2  # the check below has positions to bite on
            assert torch.equal(q.argmax(-1)[clear], f.argmax(-1)[clear])


def test_gguf_refuses_other_value_length(tmp_path):
    ref = hf_gemma3(query_pre_attn_scalar=32, rope_local_base_freq=10000.0)
    path = write_gemma3_gguf(tmp_path / "g.gguf", ref)
    data = path.read_bytes()
    key = b"gemma3.attention.value_length"
    i = data.index(key) + len(key) + 4  # then the uint32 value type and the value
    bad = data[:i] + np.uint32(16).tobytes() + data[i + 4:]
    (tmp_path / "bad.gguf").write_bytes(bad)
    with pytest.raises(CheckpointError, match="value_length"):
        load_gguf(tmp_path / "bad.gguf")


@pytest.mark.parametrize("strategy, options", [
    ("speculative", {"gamma": 3}), ("tree", {}), ("prompt-lookup", {}), ("ngram", {}),
    ("beam", {"num_beams": 1}),
])
def test_strategies_equal_greedy_on_quantized_gemma3(tmp_path, strategy, options):
    """Every drafting strategy is lossless on Gemma 3's quantized path, whose sliding-window
    layers cannot score trees in one call (the engine verifies them as batch rows); the
    draft is the target's own first two layers."""
    from seqlab.models.layer_skip import layer_skip_draft

    ref = hf_gemma3(query_pre_attn_scalar=32, rope_local_base_freq=10000.0)
    model, _ = load_gguf(write_gemma3_gguf(tmp_path / "q8.gguf", ref, QT.Q8_0), weights="q8")
    rows = [p[:8] * 2 for p in prompts()]  # repeats give prompt lookup something to find
    greedy = generate(model, rows, "greedy", 16).tokens
    kw = {}
    if strategy in ("speculative", "tree"):
        kw = {"draft": layer_skip_draft(model, [0, 1]), "temperature": 0}
    assert generate(model, rows, strategy, 16, **kw, **options).tokens == greedy

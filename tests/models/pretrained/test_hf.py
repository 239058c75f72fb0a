"""Hugging Face import (load_hf) and export (export_hf) agree with transformers, offline.

Tiny random transformers models are built and saved here, so nothing is
downloaded. Tests that compare with transformers skip when it is absent; the
error tests need only seqlab (their folders are written by export_hf).
"""

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no hub, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from seqlab.decoding import generate
from seqlab.models import LM, CheckpointError, build_lm
from seqlab.models.pattern import LayerSpec
from seqlab.models.pretrained.export import ExportError, export_hf
from seqlab.models.pretrained.hf import lm_config_from_hf, load_hf
from seqlab.tokenizer import PretrainedTokenizer
from seqlab.tokenizer import Tokenizer

try:
    import transformers
except ImportError:  # the comparisons need it; the error tests do not
    transformers = None

needs_transformers = pytest.mark.skipif(
    transformers is None, reason="transformers is not installed: nothing to compare against")

VOCAB = 101
TIED = pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])


def perturb(model, scale=0.1):
    """Move every weight, norms included, off its init so a swapped name cannot hide."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def hf_model(kind="llama", **overrides):
    cls_cfg = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
               "ministral": (transformers.MinistralConfig, transformers.MinistralForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    opts = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                num_key_value_heads=2, num_hidden_layers=2, rope_theta=5000.0, rms_norm_eps=1e-5,
                max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=None,
                eos_token_id=None, pad_token_id=None)
    opts.update(overrides)
    torch.manual_seed(1)
    return perturb(cls_cfg[1](cls_cfg[0](**opts))).eval()


def seqlab_llama(tied=True, vocab=VOCAB, **kw):
    torch.manual_seed(2)
    return perturb(build_lm(vocab_size=vocab, dim=64, layers=["attention"] * 2,
                            mixer_options={"attention": {"heads": 4, "kv_heads": 2,
                                                         "rope_theta": 5000.0}},
                            tie_embeddings=tied, **kw)).eval()


@torch.no_grad()
def assert_same_logits(ours, theirs, ids, atol=1e-5):
    torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, atol=atol, rtol=1e-5)


def hf_greedy(hf, ids, n):
    # An explicit mask: otherwise transformers masks every prompt token that equals pad_token_id.
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                      min_new_tokens=n, pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


# -- import -------------------------------------------------------------------------------------
@needs_transformers
@TIED
def test_load_hf_matches_transformers(tmp_path, tied):
    hf = hf_model(tie_word_embeddings=tied)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, tok = load_hf(tmp_path)
    assert tok is None
    assert model.cfg.layers == ("attention", "attention") and model.cfg.max_length == 128
    assert model.cfg.tie_embeddings is tied and (model.head.weight is model.embed.weight) is tied
    assert model.cfg.layers[0].options["kv_heads"] == 2
    ids = torch.randint(0, VOCAB, (3, 23))
    assert_same_logits(model, hf, ids)

    prompt = torch.randint(0, VOCAB, (2, 7))
    ours = generate(model, prompt, strategy="greedy", max_new_tokens=16).tokens
    assert ours == hf_greedy(hf, prompt, 16)


@needs_transformers
def test_load_hf_sharded(tmp_path):
    hf = hf_model(tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    model, _ = load_hf(tmp_path)
    assert_same_logits(model, hf, torch.randint(0, VOCAB, (2, 19)))


@needs_transformers
def test_load_hf_mistral_sliding_window(tmp_path):
    # A window of 5 on 20 tokens: the mask, and the cache during generation, both slide.
    hf = hf_model("mistral", sliding_window=5, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_hf(tmp_path)
    assert [s.options["window"] for s in model.cfg.layers] == [5, 5]
    assert_same_logits(model, hf, torch.randint(0, VOCAB, (2, 20)))
    prompt = torch.randint(0, VOCAB, (1, 6))
    ours = generate(model, prompt, max_new_tokens=12).tokens
    assert ours == hf_greedy(hf, prompt, 12)


@needs_transformers
@pytest.mark.parametrize("kind, options, expected", [
    ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=2),
     [None, None, 4, 4]),
    ("qwen2", dict(use_sliding_window=True, sliding_window=3,
                   layer_types=["sliding_attention", "full_attention"] * 2), [3, None, 3, None]),
    # MinistralConfig leaves head_dim None, which its attention cannot use: given explicitly.
    ("ministral", dict(sliding_window=4, head_dim=16,
                       layer_types=["full_attention", "sliding_attention", "sliding_attention",
                                    "full_attention"]), [None, 4, 4, None]),
], ids=["qwen2-max-window-layers", "qwen2-layer-types", "ministral-alternating"])
def test_load_hf_per_layer_windows_match_transformers(tmp_path, kind, options, expected):
    # 4 layers, windows of 3-4 on 21 tokens: windowed and global layers in one model, in float64.
    hf = hf_model(kind, num_hidden_layers=4, tie_word_embeddings=False, **options).double()
    assert [layer.self_attn.sliding_window for layer in hf.model.layers] == expected
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_hf(tmp_path, dtype=torch.float64)
    assert [s.options.get("window") for s in model.cfg.layers] == expected
    assert [b.mixer.cfg.window for b in model.blocks] == expected
    # float64 throughout, except transformers' rotary tables, which it always builds in float32.
    assert_same_logits(model, hf, torch.randint(0, VOCAB, (2, 21)), atol=2e-6)
    # The same weights with every window removed compute something else: the windows matter.
    unwindowed = [LayerSpec("attention", {k: v for k, v in s.options.items() if k != "window"})
                  for s in model.cfg.layers]
    full = LM(dataclasses.replace(model.cfg, layers=tuple(unwindowed))).double().eval()
    full.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (1, 21))
    assert not torch.allclose(full(ids)[0], model(ids)[0])
    prompt = torch.randint(0, VOCAB, (1, 5))
    assert generate(model, prompt, max_new_tokens=12).tokens == hf_greedy(hf, prompt, 12)


@needs_transformers
def test_load_hf_qwen2_biases(tmp_path):
    hf = hf_model("qwen2")
    assert hf.model.layers[0].self_attn.q_proj.bias is not None
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_hf(tmp_path)
    assert all(s.options["bias"] is True for s in model.cfg.layers)
    assert_same_logits(model, hf, torch.randint(0, VOCAB, (2, 15)))


@needs_transformers
def test_load_hf_casts_dtype(tmp_path):
    hf_model().save_pretrained(tmp_path, safe_serialization=True)
    model, _ = load_hf(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ref, _ = load_hf(tmp_path)
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0].float(), ref(ids)[0], atol=0.1, rtol=0.05)


# -- export -------------------------------------------------------------------------------------
@needs_transformers
@TIED
def test_export_loads_in_transformers(tmp_path, tied):
    model = seqlab_llama(tied)
    export_hf(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert ("lm_head.weight" in f.keys()) is not tied
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.tie_word_embeddings is tied
    ids = torch.randint(0, VOCAB, (2, 21))
    assert_same_logits(model, hf, ids)
    prompt = torch.randint(0, VOCAB, (2, 5))
    assert generate(model, prompt, max_new_tokens=10).tokens == \
        hf_greedy(hf, prompt, 10)


@TIED
def test_export_then_load_is_exact(tmp_path, tied):
    model = seqlab_llama(tied, max_length=256)
    export_hf(model, tmp_path)
    back, tok = load_hf(tmp_path)
    assert tok is None
    assert back.cfg.max_length == 256 and back.cfg.tie_embeddings is tied
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        assert torch.equal(back(ids)[0], model(ids)[0])
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name


def test_export_bfloat16_round_trip(tmp_path):
    model = seqlab_llama(tied=False).to(torch.bfloat16)
    export_hf(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {torch.bfloat16}
    back, _ = load_hf(tmp_path, dtype=torch.bfloat16)
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name


def tiny_bpe(specials=()):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, show_progress=False,
                                  special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["def main():\n    return 0\n", "for i in range(10): print(i)"] * 20,
                            trainer=trainer)
    return bpe


TEXT = "def main(): return range(3)"


def test_export_tokenizer_round_trip(tmp_path):
    tok = Tokenizer(tiny_bpe())
    export_hf(seqlab_llama(vocab=tok.vocab_size), tmp_path, tok)
    _, back = load_hf(tmp_path)
    assert back.encode(TEXT) == tok.encode(TEXT)
    assert back.decode_bytes(back.encode(TEXT)) == TEXT.encode()
    if transformers is not None:
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
        assert hf_tok(TEXT)["input_ids"] == tok.encode(TEXT)


def test_export_pretrained_tokenizer_keeps_special_ids_and_template(tmp_path):
    bpe = tiny_bpe(specials=["<s>", "</s>"])
    template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
    tok = PretrainedTokenizer(bpe, bos_id=bpe.token_to_id("<s>"), eos_id=bpe.token_to_id("</s>"),
                              chat_template=template)
    export_hf(seqlab_llama(vocab=tok.vocab_size), tmp_path, tok)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (tok.bos_id, tok.eos_id)
    _, back = load_hf(tmp_path)
    assert isinstance(back, PretrainedTokenizer)
    assert (back.bos_id, back.eos_id, back.chat_template) == (tok.bos_id, tok.eos_id, template)
    assert back.encode(TEXT) == tok.encode(TEXT)
    if transformers is not None:
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
        assert hf_tok.eos_token_id == tok.eos_id
        assert hf_tok(TEXT)["input_ids"] == tok.encode(TEXT)


def test_load_non_byte_level_tokenizer_as_plain_tokenizer(tmp_path):
    # A SentencePiece-style tokenizer.json (Llama 2, TinyLlama) decodes through tokenizers.
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    bpe = HFTokenizer(models.BPE(vocab={"\u2581": 0, "h": 1, "i": 2, "\u2581h": 3, "\u2581hi": 4},
                                 merges=[("\u2581", "h"), ("\u2581h", "i")]))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    export_hf(seqlab_llama(), tmp_path, Tokenizer(bpe))
    _, back = load_hf(tmp_path)
    assert type(back) is Tokenizer
    assert back.encode("hi hi") == [4, 4] and back.decode_bytes([4, 4]) == b"hi hi"


def test_export_without_default_max_length(tmp_path):
    export_hf(seqlab_llama(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 4096
    assert cfg["eos_token_id"] is None and cfg["rope_parameters"]["rope_theta"] == 5000.0


# -- errors -------------------------------------------------------------------------------------
def _attn(**kw):
    return {"attention": {"heads": 4, **kw}}


@pytest.mark.parametrize("options, needle", [
    (dict(layers=["attention", "mamba"], mixer_options=_attn()), "layer 1 is a 'mamba' mixer"),
    (dict(layers=["attention"] * 2, mixer_options=_attn(window=8)), "window = 8"),
    (dict(layers=["attention"], mixer_options=_attn(bias=True)), "bias = True"),
    (dict(layers=["attention"], mixer_options=_attn(rotary=False)), "rotary = False"),
    (dict(layers=["attention"], mixer_options=_attn(scale=0.5)), "scale = 0.5"),
    (dict(layers=["attention"], mixer_options=_attn(), mlp_hidden=0), "has no MLP"),
], ids=["mamba", "window", "bias", "no-rotary", "scale", "no-mlp"])
def test_export_refuses_non_llama(tmp_path, options, needle):
    model = build_lm(vocab_size=50, dim=32, **options)
    with pytest.raises(ExportError, match=needle):
        export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_refuses_folder_with_other_checkpoint_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ExportError, match="tokenizer.json"):
        export_hf(seqlab_llama(), tmp_path)


@pytest.fixture
def exported(tmp_path):
    export_hf(seqlab_llama(tied=False), tmp_path)
    return tmp_path


def edit_config(folder, **changes):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes, needle", [
    (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"]),
     r"model_type 'gpt2' .* not supported; load_hf reads: llama \(LlamaForCausalLM\)"),
    (dict(architectures=["LlamaForSequenceClassification"]), "LlamaForSequenceClassification"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling = .*llama3"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
     "rope_parameters = .*linear"),
    (dict(attention_bias=True), "attention_bias = true"),
    (dict(mlp_bias=True), "mlp_bias = true"),
    (dict(head_dim=32), "head_dim = 32 differs"),
    (dict(hidden_act="gelu"), "hidden_act = 'gelu'"),
    (dict(num_hidden_layers=None), "lacks integer field.*num_hidden_layers"),
    (dict(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=8,
          layer_types=["sliding_attention", "full_attention"]),
     "transformers' MistralForCausalLM ignores layer_types .* set model_type 'ministral'"),
    (dict(model_type="ministral", architectures=["MinistralForCausalLM"], sliding_window=8,
          layer_types=["sliding_attention", "chunked_attention"]),
     r"layer_types = \['sliding_attention', 'chunked_attention'\] \(expected a list of 2 entries, "
     r"each 'full_attention' or 'sliding_attention'\)"),
    (dict(model_type="ministral", architectures=["MinistralForCausalLM"], sliding_window=0),
     "sliding_window = 0 .expected a positive int or null"),
], ids=["gpt2", "arch", "rope_scaling", "rope_parameters", "attention_bias", "mlp_bias",
        "head_dim", "gelu", "no-layers", "mistral-layer-types", "bad-layer-types", "bad-window"])
def test_load_refuses_unsupported_config(exported, changes, needle):
    edit_config(exported, **changes)
    with pytest.raises(CheckpointError, match=needle):
        load_hf(exported)


def test_config_layouts_of_transformers_4_and_qwen2_windows():
    base = dict(model_type="llama", vocab_size=50, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4)
    # transformers 4.x: top-level rope_theta, rope_scaling null; absent keys take Llama's defaults.
    cfg = lm_config_from_hf(dict(base, rope_theta=500000.0, rope_scaling=None))
    attn = cfg.layers[0].options
    assert attn["rope_theta"] == 500000.0 and attn["kv_heads"] == 4 and "window" not in attn
    assert (cfg.norm_eps, cfg.tie_embeddings, cfg.max_length) == (1e-6, False, 2048)
    assert lm_config_from_hf(base).layers[1].options["rope_theta"] == 10000.0

    def windows(hf):
        return [s.options.get("window") for s in lm_config_from_hf(hf).layers]

    # Qwen2 slides on layers >= max_window_layers (or as layer_types say), only if asked.
    qwen = dict(base, model_type="qwen2", use_sliding_window=True, sliding_window=16,
                max_window_layers=0)
    assert windows(qwen) == [16, 16]
    assert windows(dict(qwen, max_window_layers=1)) == [None, 16]
    assert windows(dict(qwen, layer_types=["sliding_attention", "full_attention"])) == [16, None]
    assert windows(dict(qwen, use_sliding_window=False)) == [None, None]
    # Mistral: an explicit null window is full attention; an absent one is transformers' 4096.
    mistral = dict(base, model_type="mistral")
    assert windows(mistral) == [4096, 4096]
    assert windows(dict(mistral, sliding_window=None)) == [None, None]
    # Ministral: layer_types pick the windowed layers; without them every layer slides.
    ministral = dict(base, model_type="ministral", sliding_window=32)
    assert windows(ministral) == [32, 32]
    assert windows(dict(ministral, layer_types=["full_attention", "sliding_attention"])) == [None, 32]


def test_load_missing_folder_config_or_weights(tmp_path, exported):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_hf(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_hf(tmp_path / "empty")
    (exported / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        load_hf(exported)


def test_load_names_missing_unexpected_and_misshapen_tensors(exported):
    path = exported / "model.safetensors"
    good = load_file(path)

    t = dict(good)
    del t["model.layers.1.self_attn.k_proj.weight"]
    save_file(t, path)
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*model.layers.1.self_attn.k_proj"):
        load_hf(exported)

    t = dict(good, **{"model.layers.0.self_attn.o_proj.bias": torch.zeros(64)})
    save_file(t, path)
    with pytest.raises(CheckpointError, match="unexpected tensor.*o_proj.bias"):
        load_hf(exported)

    t = dict(good, **{"model.norm.weight": torch.ones(63)})
    save_file(t, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: model.norm.weight \(63,\)"):
        load_hf(exported)

    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_hf(exported)


def test_load_index_naming_absent_shard(exported):
    (exported / "model.safetensors").rename(exported / "model-00001-of-00002.safetensors")
    names = list(load_file(exported / "model-00001-of-00002.safetensors"))
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names}
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (exported / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="absent.*model-00002-of-00002"):
        load_hf(exported)

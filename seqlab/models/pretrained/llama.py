"""The Llama architecture in seqlab terms: config fields and weight names.

A Llama decoder is exactly a seqlab LM whose layers are all ``attention``
(rotary, grouped key/value heads, no biases) with RMSNorm and a SwiGLU MLP,
so importing one is renaming tensors. Hugging Face names are the reference
here; GGUF names are mapped onto them by the GGUF reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqlab.models.lm import LMConfig
from seqlab.models.pattern import LayerSpec
from seqlab.models.pretrained.names import NameMap

# Hugging Face name (per layer, with {i}) -> seqlab name.
_LAYER = {
    "model.layers.{i}.input_layernorm.weight": "blocks.{i}.mixer_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blocks.{i}.mixer.q_proj.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blocks.{i}.mixer.k_proj.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blocks.{i}.mixer.v_proj.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blocks.{i}.mixer.o_proj.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blocks.{i}.mlp_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blocks.{i}.mlp.gate_proj.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blocks.{i}.mlp.up_proj.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blocks.{i}.mlp.down_proj.weight",
}
_GLOBAL = {
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "head.weight",
}


_NAMES = NameMap(_LAYER, _GLOBAL)


def hf_to_seqlab_name(name: str) -> str | None:
    """The seqlab parameter name for a Hugging Face Llama tensor name (None if unknown)."""
    return _NAMES.to_seqlab(name)


def seqlab_to_hf_name(name: str) -> str | None:
    """The Hugging Face Llama name for a seqlab parameter name (None if unknown)."""
    return _NAMES.to_hf(name)


def lm_config(*, vocab_size: int, dim: int, n_layers: int, heads: int, kv_heads: int,
              mlp_hidden: int, rope_theta: float, norm_eps: float, tie_embeddings: bool,
              max_length: int | None, attention_bias: bool = False,
              windows: Sequence[int | None] | None = None) -> LMConfig:
    """The seqlab LMConfig of a Llama model with these hyper-parameters.

    Args:
        windows: per layer, a sliding window (Mistral, Qwen2) or None for full
            attention; None: full attention on every layer.
    """
    windows = [None] * n_layers if windows is None else list(windows)
    if len(windows) != n_layers:
        raise ValueError(f"windows has {len(windows)} entries for {n_layers} layers")
    layers = [LayerSpec("attention", {} if w is None else {"window": w}) for w in windows]
    return LMConfig(vocab_size=vocab_size, dim=dim, layers=tuple(layers),
                    mixer_options={"attention": {"heads": heads, "kv_heads": kv_heads,
                                                 "rope_theta": float(rope_theta),
                                                 "bias": attention_bias}},
                    mlp_hidden=mlp_hidden, norm_eps=float(norm_eps), tie_embeddings=tie_embeddings,
                    max_length=max_length)

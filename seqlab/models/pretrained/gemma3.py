"""The Gemma 3 text architecture in seqlab terms: config fields and weight names.

Gemma 3 (arXiv:2503.19786) is a seqlab LM of ``attention`` layers with these
differences from Llama, each a seqlab option rather than a copied model class:

* sliding-window layers interleaved with global ones (five local to one global by
  default: ``layer_types``), each kind with its own rotary base (local 10,000,
  global 1,000,000, the global one optionally with linear rope scaling): per-layer
  attention specs ``attention(window=512,rope_theta=10000)`` beside ``attention``;
* RMSNorm over each head's queries and keys before rotary (``qk_norm``), a head width
  apart from the model width (``head_dim``) and the scale ``query_pre_attn_scalar**-0.5``;
* norms on the attention's and the MLP's outputs as well as their inputs
  (``post_norms``), a GeGLU MLP (``mlp_activation="gelu_tanh"``) and embeddings scaled by
  ``sqrt(dim)`` (``embed_scale``);
* RMSNorm weights stored as offsets from one (``x * (1 + w)``): seqlab's RMSNorm
  multiplies by its weight, so 1 is added as the weights are read (GGUF files store the
  sum already: llama.cpp's converter adds it).

Hugging Face names are the reference; GGUF names map onto them in the GGUF reader.
"""

from __future__ import annotations


import torch

from seqlab.models.lm import LMConfig
from seqlab.models.pattern import LayerSpec
from seqlab.models.pretrained.names import NameMap

MODEL_TYPES = ("gemma3_text",)
ARCHITECTURE = "Gemma3ForCausalLM"
LAYER_TYPES = ("sliding_attention", "full_attention")
LOCAL_THETA, GLOBAL_THETA = 10_000.0, 1_000_000.0

# Hugging Face name (per layer, with {i}) -> seqlab name.
_LAYER = {
    "model.layers.{i}.input_layernorm.weight": "blocks.{i}.mixer_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blocks.{i}.mixer.q_proj.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blocks.{i}.mixer.k_proj.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blocks.{i}.mixer.v_proj.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blocks.{i}.mixer.o_proj.weight",
    "model.layers.{i}.self_attn.q_norm.weight": "blocks.{i}.mixer.q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "blocks.{i}.mixer.k_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blocks.{i}.mixer_post_norm.weight",
    "model.layers.{i}.pre_feedforward_layernorm.weight": "blocks.{i}.mlp_norm.weight",
    "model.layers.{i}.post_feedforward_layernorm.weight": "blocks.{i}.mlp_post_norm.weight",
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
    """The seqlab parameter name for a Hugging Face Gemma 3 tensor name (None if unknown)."""
    return _NAMES.to_seqlab(name)


def seqlab_to_hf_name(name: str) -> str | None:
    """The Hugging Face Gemma 3 name for a seqlab parameter name (None if unknown)."""
    return _NAMES.to_hf(name)


def from_offset_norm(seqlab_name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A Hugging Face tensor as seqlab holds it: norm weights ``w`` become ``1 + w`` in
    float32 (as Gemma's norm computes it; the caller casts), every other tensor is unchanged."""
    if seqlab_name.endswith("norm.weight"):
        return tensor.float() + 1.0
    return tensor


def default_layer_types(n_layers: int, pattern: int = 6) -> list[str]:
    """Gemma 3's layout: every ``pattern``-th layer global, the others sliding."""
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(n_layers)]


def lm_config(*, vocab_size: int, dim: int, layer_types: list[str], heads: int, kv_heads: int,
              head_dim: int, mlp_hidden: int, window: int | None, local_theta: float,
              global_theta: float, global_rope_scale: float, query_pre_attn_scalar: float,
              norm_eps: float, tie_embeddings: bool, max_length: int | None) -> LMConfig:
    """The seqlab LMConfig of a Gemma 3 text model with these hyper-parameters."""
    layers = []
    for kind in layer_types:
        if kind == "sliding_attention":
            opts = {"window": window, "rope_theta": float(local_theta)} if window else \
                {"rope_theta": float(local_theta)}
        else:
            opts = {"rope_theta": float(global_theta)}
            if global_rope_scale != 1.0:
                opts["rope_scale"] = float(global_rope_scale)
        layers.append(LayerSpec("attention", opts))
    return LMConfig(
        vocab_size=vocab_size, dim=dim, layers=tuple(layers),
        mixer_options={"attention": {"heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
                                     "qk_norm": True, "qk_norm_eps": float(norm_eps),
                                     "scale": float(query_pre_attn_scalar) ** -0.5}},
        mlp_hidden=mlp_hidden, mlp_activation="gelu_tanh", post_norms=True,
        embed_scale=float(dim) ** 0.5, norm_eps=float(norm_eps), tie_embeddings=tie_embeddings,
        max_length=max_length)

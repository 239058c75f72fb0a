"""Quantized weights for any seqlab LM: which layers, which block format.

``weights`` names a policy, chosen when a model is loaded
(``load_pretrained(..., weights="q4")``) or applied to a float model
(``quantize_lm(model, "q8")``):

* ``"float"``: float weights (nothing quantized);
* ``"q8"``: every linear layer, the embedding and the head in Q8_0 (8.5 bits per weight);
* ``"q4"``: linear layers in Q4_1 (5 bits per weight), the embedding and a tied head in
  Q8_0 (llama.cpp's 4-bit presets keep those wider too); a GGUF tensor in Q4_0, Q4_1 or
  Q8_0 keeps its format, and one of 5 to 6 bits (Q5_*, Q6_K) becomes Q8_0.

A GGUF tensor already in a kernel format (Q4_0, Q4_1, Q8_0) is kept byte for byte where
the policy allows it (``gguf_blocks``), so a Q4_1 file with ``weights="q4"`` runs its own
bits and its logits equal the dequantized float model's up to float32 rounding. Norms,
biases and every mixer's own non-linear parameters (a Mamba's A, a GRU's cell) stay float.
Layers whose input width is not a multiple of 32 stay float.

Example:
    >>> model = quantize_lm(load_pretrained("path/to/hf-folder")[0], "q4")
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from seqlab.nn.quant import QuantEmbedding, QuantLinear, check_activations
from seqlab.ops import decode_cpu

log = logging.getLogger(__name__)

WEIGHTS = ("float", "q8", "q4")

# GGUF types with at most ~4.5 bits per weight: "q4" may store them as Q4_1.
_FOUR_BIT = ("Q2_K", "Q3_K", "Q4_K")
_NATIVE = {"Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1"}


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r} is not known; choose one of {', '.join(WEIGHTS)} "
                         "(float weights, or Q8_0 / Q4_1 blocks run by seqlab's CPU kernels)")
    return weights


def target_format(weights: str, role: str, source_type: str = "F32") -> str | None:
    """The block format a weight gets under ``weights``; None keeps it float.

    Args:
        role: ``"linear"`` or ``"embedding"`` (a tied head is the embedding).
        source_type: the GGUF tensor type it comes from (``"F32"`` for float sources).
    """
    check_weights(weights)
    if weights == "float":
        return None
    if weights == "q8":
        return "q8_0"
    if source_type in _NATIVE:
        return _NATIVE[source_type]  # the file's own blocks, whatever the role
    if role == "embedding":
        return "q8_0"
    if source_type in _FOUR_BIT or source_type in ("F32", "F16", "BF16"):
        return "q4_1"
    return "q8_0"  # 5- to 8-bit types keep their extra bits


def gguf_blocks(raw: np.ndarray, source_type: str, fmt: str, dequantized) -> Tensor:
    """The packed ``fmt`` blocks of a GGUF tensor: its own bytes when it is already ``fmt``
    (moved into the kernels' layout), else quantized from its float values
    (``dequantized()``, (N, K) float32)."""
    if _NATIVE.get(source_type) == fmt:
        rows = np.ascontiguousarray(raw.reshape(raw.shape[0], -1)).view(np.uint8)
        if not rows.flags.writeable:  # a view of the file's read-only memory map
            rows = rows.copy()
        return decode_cpu.pack(torch.from_numpy(rows), fmt)
    return decode_cpu.quantize(torch.from_numpy(dequantized()), fmt)


def quantize_lm(model: nn.Module, weights: str, activations: str = "int8") -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` and ``nn.Embedding`` layers by quantized ones, in place.

    A tied head stays tied (one set of blocks). ``activations``: ``"int8"`` (fast) or
    ``"float"`` (exact), see :mod:`seqlab.nn.quant`. Returns ``model``.

    Raises:
        ValueError: an unknown ``weights`` or ``activations``.
    """
    check_weights(weights)
    check_activations(activations)
    if weights == "float":
        return model
    tied = getattr(model, "head", None) is not None and getattr(model, "embed", None) is not None \
        and getattr(model.head, "weight", None) is getattr(model.embed, "weight", 0)
    kept = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Embedding):
            fmt = target_format(weights, "embedding")
            if module.embedding_dim % decode_cpu.BLOCK:
                kept.append(name)
                continue
            new = QuantEmbedding(decode_cpu.quantize(module.weight, fmt), fmt, module.num_embeddings,
                                 module.embedding_dim, dtype=module.weight.dtype)
        elif isinstance(module, nn.Linear):
            if tied and module is model.head:
                continue
            if module.in_features % decode_cpu.BLOCK:
                kept.append(name)
                continue
            new = QuantLinear.from_linear(module, target_format(weights, "linear"), activations)
        else:
            continue
        _replace(model, name, new)
    if tied:
        model.head = model.embed.as_head()
    fuse_projections(model)
    if kept:
        log.info("quantize_lm: %d layers stay float (input width not a multiple of %d): %s",
                 len(kept), decode_cpu.BLOCK, ", ".join(kept[:5]))
    return model


def fuse_projections(model: nn.Module) -> nn.Module:
    """Concatenate quantized q/k/v (attention) and gate/up (gated MLP) layers of one format into
    one layer each, in place: a decode step then runs 4 matrix products per block, not 7.
    Blocks that then have the Llama layout step in one C++ call (seqlab.models.block_step)."""
    from seqlab.mixers.attention import Attention
    from seqlab.models import block_step
    from seqlab.nn.mlp import GatedMLP

    def fused(layers):
        # Packed rows come in groups of 8: parts of other sizes would share a group.
        if (not all(isinstance(m, QuantLinear) for m in layers)
                or len({(m.fmt, m.activations) for m in layers}) != 1
                or any(m.out_features % decode_cpu.GROUP for m in layers)):
            return None
        biases = [m.bias for m in layers]
        if any(b is not None for b in biases):
            biases = [torch.zeros(m.out_features) if b is None else b.detach() for m, b in zip(layers, biases)]
            bias = torch.cat(biases)
        else:
            bias = None
        blocks = torch.cat([m.blocks for m in layers])
        return QuantLinear(blocks, layers[0].fmt, sum(m.out_features for m in layers),
                           layers[0].in_features, bias, layers[0].activations)

    for module in model.modules():
        if isinstance(module, Attention) and module.qkv_proj is None:
            new = fused([module.q_proj, module.k_proj, module.v_proj])
            if new is not None:
                module.fuse_qkv(new)
        elif isinstance(module, GatedMLP) and module.gate_up_proj is None:
            new = fused([module.gate_proj, module.up_proj])
            if new is not None:
                module.fuse_gate_up(new)
    for module in model.modules():
        if hasattr(module, "fused_step"):
            module.fused_step = block_step.eligible(module)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def weight_count(model: nn.Module) -> int:
    """Weights held as blocks in ``model`` (each shared set of blocks counted once)."""
    seen = {}
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            seen[m.blocks.data_ptr()] = m.num_weights
    return sum(seen.values())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters, buffers and blocks of ``model``, each tensor counted once."""
    seen = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())

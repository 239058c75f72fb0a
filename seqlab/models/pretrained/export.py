"""Write a seqlab LM as a Hugging Face ``LlamaForCausalLM`` checkpoint folder.

Only a model that *is* a Llama can be written as one: every layer
``attention`` with rotary positions, no sliding window, no q/k/v biases, the
default 1/sqrt(head_dim) scale, no q/k norms, and a SwiGLU MLP in every block. Anything
else (a mamba layer, a window, biases, MLP-free blocks...) is refused with a
message naming the layer or option, rather than written as a checkpoint that
``transformers`` would run differently.

The folder holds ``config.json`` (every field transformers needs to rebuild
the model offline), ``model.safetensors`` under Hugging Face names (a tied
head is stored once, as ``model.embed_tokens.weight``, with no
``lm_head.weight``) and, when the tokenizer has one, ``tokenizer.json`` with
a ``tokenizer_config.json`` that makes ``AutoTokenizer`` use it as is.
Files are written under temporary names and renamed into place.

Example:
    >>> model = build_lm(vocab_size=256, dim=64, layers=["attention"] * 2,
    ...                  mixer_options={"attention": {"heads": 4, "kv_heads": 2}})
    >>> export_hf(model, "out/tiny-llama")
    >>> AutoModelForCausalLM.from_pretrained("out/tiny-llama")   # transformers, offline
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from seqlab.models.lm import LM
from seqlab.models.pattern import format_pattern
from seqlab.models.pretrained import llama

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Written when the model sets no max_length: Llama 2's context. A label only for
# the default rotary embedding, which computes any position the same way.
DEFAULT_MAX_POSITIONS = 4096
# Files of another checkpoint that, left beside ours, would be read with it.
_FOREIGN = ("model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "generation_config.json", "tokenizer.model", "special_tokens_map.json",
            "added_tokens.json")


class ExportError(ValueError):
    """A model or folder that cannot be written as a Hugging Face Llama checkpoint."""


def export_hf(model: LM, folder: str | os.PathLike, tokenizer=None, *,
              max_position_embeddings: int | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``) as a Hugging Face Llama checkpoint folder.

    Args:
        model: a seqlab :class:`LM` whose layers are all plain rotary attention
            with an MLP (see the module docstring).
        folder: created if needed. An earlier export's files there are replaced;
            another checkpoint's files (shards, ``pytorch_model.bin``, a stale
            tokenizer...) are refused, as transformers would read them too.
        tokenizer: a :class:`seqlab.tasks.corpus.Tokenizer`; its ``tokenizer.json``
            is written when it wraps a ``tokenizers`` model (the byte tokenizer
            has none). A PretrainedTokenizer's ``bos_id`` / ``eos_id`` become the
            config's ``bos_token_id`` / ``eos_token_id`` (else null) and, with its
            chat template, go to ``tokenizer_config.json``.
        max_position_embeddings: the context written to the config; default
            ``model.cfg.max_length``, else 4096.

    Returns:
        The folder.

    Raises:
        ExportError: a layer or option with no Llama equivalent (named), or a
            folder holding another checkpoint's weight or tokenizer files.

    Example:
        >>> export_hf(model, "tiny-llama", tokenizer)
        >>> model2, tok2 = load_hf("tiny-llama")          # identical logits
    """
    config = hf_config(model, tokenizer, max_position_embeddings)
    tensors = hf_state_dict(model)
    bpe = getattr(tokenizer, "bpe", None) if tokenizer is not None else None

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_folder(folder, writes_tokenizer=bpe is not None)

    tmp = []
    try:
        w = folder / (WEIGHTS + ".tmp")
        tmp.append((w, folder / WEIGHTS))
        save_file(tensors, str(w), metadata={"format": "pt"})
        if bpe is not None:
            t = folder / (TOKENIZER + ".tmp")
            bpe.save(str(t))
            tmp.append((t, folder / TOKENIZER))
            tc = folder / (TOKENIZER_CONFIG + ".tmp")
            tc.write_text(json.dumps(_tokenizer_config(tokenizer), indent=2) + "\n")
            tmp.append((tc, folder / TOKENIZER_CONFIG))
        c = folder / (CONFIG + ".tmp")
        c.write_text(json.dumps(config, indent=2) + "\n")
        tmp.append((c, folder / CONFIG))  # last: a folder with a config is complete
        for src, _ in tmp:
            with open(src, "rb") as f:
                os.fsync(f.fileno())
        for src, dst in tmp:
            os.replace(src, dst)
    finally:
        for src, _ in tmp:
            src.unlink(missing_ok=True)
    return folder


def check_exportable(model: LM) -> None:
    """Raise :class:`ExportError` naming the first thing a Llama checkpoint cannot express."""
    if not isinstance(model, LM):
        raise ExportError(f"export_hf writes a seqlab LM; got {type(model).__name__}")
    cfg = model.cfg
    for i, (spec, block) in enumerate(zip(cfg.layers, model.blocks)):
        if spec.mixer != "attention":
            raise ExportError(f"layer {i} is a {spec.mixer!r} mixer: a Llama checkpoint holds "
                              f"attention layers only (layers = {format_pattern(cfg.layers)})")
        a = block.mixer.cfg
        if a.window is not None:
            raise ExportError(f"layer {i}: attention window = {a.window}: Llama attends to the "
                              "whole prefix (a sliding window is Mistral's, not Llama's)")
        if not a.rotary:
            raise ExportError(f"layer {i}: attention rotary = False: Llama uses rotary positions")
        if a.bias:
            raise ExportError(f"layer {i}: attention bias = True: Llama's q/k/v projections have "
                              "no biases")
        head_dim = block.mixer.head_dim
        if a.scale is not None and a.scale != head_dim ** -0.5:
            raise ExportError(f"layer {i}: attention scale = {a.scale}: Llama scales by "
                              f"1/sqrt(head_dim) = {head_dim ** -0.5}")
        if a.rope_scale != 1.0:
            raise ExportError(f"layer {i}: attention rope_scale = {a.rope_scale}: the export "
                              "writes plain rotary positions")
        if a.qk_norm:
            raise ExportError(f"layer {i}: attention qk_norm = True: Llama does not normalise "
                              "queries and keys")
        if a.head_dim is not None and a.head_dim * a.heads != model.cfg.dim:
            raise ExportError(f"layer {i}: attention head_dim = {a.head_dim} with {a.heads} heads "
                              f"is not dim = {model.cfg.dim}: Llama's heads split the width")
        if block.mlp is None:
            raise ExportError(f"layer {i} has no MLP (mlp_hidden = {cfg.mlp_hidden}): every Llama "
                              "block has a SwiGLU MLP")
    if cfg.mlp_activation != "silu" or cfg.post_norms or cfg.embed_scale != 1.0:
        raise ExportError(f"mlp_activation = {cfg.mlp_activation!r}, post_norms = {cfg.post_norms}, "
                          f"embed_scale = {cfg.embed_scale}: a Llama checkpoint has a SwiGLU MLP, "
                          "no post norms and unscaled embeddings (this is Gemma's layout)")
    if cfg.tie_embeddings and model.head.weight is not model.embed.weight:
        raise ExportError("cfg.tie_embeddings is True but model.head.weight is not "
                          "model.embed.weight: re-tie them or build the model untied")


def hf_config(model: LM, tokenizer=None, max_position_embeddings: int | None = None) -> dict:
    """The ``config.json`` contents for ``model`` (after :func:`check_exportable`)."""
    check_exportable(model)
    cfg = model.cfg
    attn = model.blocks[0].mixer
    dtype = str(model.embed.weight.dtype).removeprefix("torch.")
    theta = float(attn.cfg.rope_theta)
    positions = max_position_embeddings or cfg.max_length or DEFAULT_MAX_POSITIONS
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.mlp_width,
        "num_hidden_layers": len(cfg.layers),
        "num_attention_heads": attn.heads,
        "num_key_value_heads": attn.kv_heads,
        "head_dim": attn.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": positions,
        "rms_norm_eps": cfg.norm_eps,
        # transformers 5 reads rope_parameters; 4.x reads the top-level rope_theta.
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "rope_theta": theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        # Explicit nulls: LlamaConfig's defaults (1 and 2) would make transformers stop
        # generating at token 2 of a vocabulary that has no such meaning.
        "bos_token_id": getattr(tokenizer, "bos_id", None),
        "eos_token_id": getattr(tokenizer, "eos_id", None),
        "pad_token_id": getattr(tokenizer, "pad_id", None),
        "dtype": dtype,
        "torch_dtype": dtype,
        "use_cache": True,
    }


def hf_state_dict(model: LM) -> dict[str, torch.Tensor]:
    """The model's tensors under Hugging Face Llama names, contiguous, on the CPU."""
    check_exportable(model)
    out = {}
    for name, t in model.state_dict().items():
        if name == "head.weight" and model.cfg.tie_embeddings:
            continue  # stored once, as the embedding; transformers re-ties on load
        hf = llama.seqlab_to_hf_name(name)
        if hf is None:
            raise ExportError(f"model tensor {name!r} has no Llama equivalent")
        out[hf] = t.detach().to("cpu").contiguous()
    return out


def _tokenizer_config(tokenizer) -> dict:
    # PreTrainedTokenizerFast reads tokenizer.json as it is: no Llama-specific
    # prefix space or added bos that would change the ids.
    out = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for key, attr in (("bos_token", "bos_id"), ("eos_token", "eos_id"), ("pad_token", "pad_id")):
        i = getattr(tokenizer, attr, None)
        if i is not None:
            out[key] = tokenizer.bpe.id_to_token(i)
    template = getattr(tokenizer, "chat_template", None)
    if template:
        out["chat_template"] = template
    return out


def _check_folder(folder: Path, writes_tokenizer: bool) -> None:
    stale = [f for f in _FOREIGN if (folder / f).exists()]
    stale += sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    if not writes_tokenizer:  # else these two are replaced
        stale += [f for f in (TOKENIZER, TOKENIZER_CONFIG) if (folder / f).exists()]
    if stale:
        raise ExportError(f"{folder} already holds {stale}, which transformers would read along "
                          "with the exported model; export into an empty folder, or remove them")


__all__ = ["DEFAULT_MAX_POSITIONS", "ExportError", "check_exportable", "export_hf", "hf_config",
           "hf_state_dict"]

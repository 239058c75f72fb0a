"""Load a Hugging Face Llama-family checkpoint folder as a seqlab LM.

A ``LlamaForCausalLM`` folder (``config.json``, ``model.safetensors`` or a
sharded ``model.safetensors.index.json``, optionally ``tokenizer.json``) is a
seqlab LM whose layers are all ``attention``: rotary in the Hugging Face
half-split layout, grouped key/value heads, RMSNorm and a SwiGLU MLP (see
:mod:`seqlab.models.pretrained.llama`). Close relatives map the same way:
``mistral`` (a sliding window on every layer), ``ministral`` (sliding and
global layers as its ``layer_types`` say) and ``qwen2`` (biases on the q/k/v
projections; a window on the layers ``layer_types`` or ``max_window_layers``
pick when ``use_sliding_window`` is set). Per-layer windows become per-layer
attention specs (``attention(window=4096)`` beside ``attention``).
``gemma3_text`` (``Gemma3ForCausalLM``) maps through
:mod:`seqlab.models.pretrained.gemma3`: local and global layers with their own
rotary bases, q/k norms, post norms, GeGLU and scaled embeddings.
Everything else a config can say that seqlab's layers do not compute (rope
scaling, other biases, a head_dim that is not hidden_size / heads, another
activation, layer types other than sliding and full attention) is refused
with a message naming the field, so a loaded model never silently differs
from the checkpoint. Nothing here needs ``transformers`` or a network.

Example:
    >>> model, tokenizer = load_hf("path/to/TinyLlama-1.1B", dtype=torch.bfloat16)
    >>> ids = torch.tensor([tokenizer.encode("def main():")])
    >>> out = seqlab.decoding.generate(model, ids, max_new_tokens=20)
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from seqlab.config import ConfigError
from seqlab.models.io import CheckpointError
from seqlab.models.lm import LM, LMConfig
from seqlab.models.pretrained import gemma3, llama

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"

# model_type -> (architecture class name, defaults that transformers uses for keys a
# config.json leaves out). Only the keys this module reads are listed.
SUPPORTED: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", {
        "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False}),
    "mistral": ("MistralForCausalLM", {
        "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 4096 * 32, "hidden_act": "silu", "sliding_window": 4096}),
    "ministral": ("MinistralForCausalLM", {
        "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 4096 * 32, "hidden_act": "silu", "sliding_window": 4096}),
    "qwen2": ("Qwen2ForCausalLM", {
        "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 32768, "hidden_act": "silu", "use_sliding_window": False,
        "sliding_window": 4096, "max_window_layers": 28}),
    "gemma3_text": (gemma3.ARCHITECTURE, {
        "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "max_position_embeddings": 131072,
        "hidden_activation": "gelu_pytorch_tanh", "num_key_value_heads": 4, "head_dim": 256,
        "query_pre_attn_scalar": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
        "final_logit_softcapping": None, "attn_logit_softcapping": None, "attention_bias": False,
        "use_bidirectional_attention": False, "rope_theta": gemma3.GLOBAL_THETA,
        "rope_local_base_freq": gemma3.LOCAL_THETA}),
}


@dataclass(frozen=True)
class Names:
    """How one family's tensors map onto seqlab: names both ways, and a value conversion."""

    to_seqlab: Callable[[str], str | None]
    to_hf: Callable[[str], str | None]
    convert: Callable[[str, torch.Tensor], torch.Tensor]   # (seqlab name, tensor) -> tensor


def _llama_to_seqlab(name: str) -> str | None:
    # The Llama map names weights; Qwen2's q/k/v biases sit beside them under the same prefix.
    if name.endswith(".bias"):
        base = llama.hf_to_seqlab_name(name[: -len("bias")] + "weight")
        return None if base is None else base[: -len("weight")] + "bias"
    return llama.hf_to_seqlab_name(name)


_LLAMA_NAMES = Names(_llama_to_seqlab, llama.seqlab_to_hf_name, lambda name, t: t)
_GEMMA3_NAMES = Names(gemma3.hf_to_seqlab_name, gemma3.seqlab_to_hf_name, gemma3.from_offset_norm)


def names_for(model_type: str) -> Names:
    return _GEMMA3_NAMES if model_type in gemma3.MODEL_TYPES else _LLAMA_NAMES
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")
# Buffers some older checkpoints saved; they are recomputed from rope_theta.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_hf(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
            device: str | torch.device = "cpu"):
    """Load a Hugging Face Llama / Mistral / Qwen2 checkpoint folder.

    Args:
        folder: a folder as written by ``save_pretrained`` (safetensors only):
            ``config.json`` plus ``model.safetensors`` or
            ``model.safetensors.index.json`` and its shards.
        dtype: every tensor is cast to this floating dtype as it is read.
        device: where the weights are placed.

    Returns:
        ``(model, tokenizer)``: a seqlab :class:`LM` in eval mode, and the
        folder's ``tokenizer.json`` (None when it has none): a
        :class:`~seqlab.tokenizer.PretrainedTokenizer` (bos/eos
        ids, chat template) for byte-level BPE, else the plain
        :class:`seqlab.tokenizer.Tokenizer`.

    Raises:
        CheckpointError: no folder or config, an unsupported architecture or
            option (named), missing, unexpected or misshapen tensors (a few
            named), unreadable weight files.

    Example:
        >>> model, tok = load_hf("tiny-llama", dtype=torch.float32)
        >>> logits, state = model(torch.tensor([tok.encode("hello")]))
    """
    folder = Path(folder)
    hf = read_hf_config(folder)
    cfg = lm_config_from_hf(hf, source=folder / CONFIG)
    if not dtype.is_floating_point:
        raise CheckpointError(f"load_hf(dtype={dtype}) is not allowed: expected a floating dtype "
                              "such as torch.float32 or torch.bfloat16")
    model = _load_weights(cfg, folder, dtype, device, names_for(hf.get("model_type")))
    return model, _load_tokenizer(folder, hf)


def read_hf_config(folder: Path) -> dict:
    """The parsed ``config.json`` of a checkpoint folder."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; expected a Hugging Face checkpoint "
                              f"folder holding {CONFIG} and {WEIGHTS}")
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG}: not a Hugging Face checkpoint folder")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    return data


def lm_config_from_hf(hf: dict, source: str | os.PathLike = CONFIG) -> LMConfig:
    """Map a Hugging Face config dict onto an :class:`LMConfig`, refusing what it cannot express.

    Raises:
        CheckpointError: an unsupported model_type/architecture, a missing
            required field, or an option seqlab's layers do not compute.
    """
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    supported = ", ".join(f"{t} ({a})" for t, (a, _) in SUPPORTED.items())
    if model_type not in SUPPORTED:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} (architectures {archs}) is not supported; "
            f"load_hf reads: {supported}")
    arch, defaults = SUPPORTED[model_type]
    if not all(isinstance(a, str) and a.endswith("ForCausalLM") for a in archs):
        raise CheckpointError(
            f"{source}: architectures {archs} is not supported for model_type {model_type!r}; "
            f"expected a causal LM head such as [{arch!r}]. load_hf reads: {supported}")

    def get(key):  # as transformers reads it: an explicit null stays null
        return hf[key] if key in hf else defaults.get(key)

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: {what}; seqlab's {model_type} mapping does not compute "
                               "this, so the loaded model would differ from the checkpoint")

    missing = [k for k in _REQUIRED
               if not isinstance(hf.get(k), int) or isinstance(hf.get(k), bool)]
    if missing:
        raise CheckpointError(f"{source} lacks integer field(s) {', '.join(missing)}")
    if model_type in gemma3.MODEL_TYPES:
        return _gemma3_config(hf, get, refuse, source)
    dim, heads = hf["hidden_size"], hf["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads") or heads
    n_layers = hf["num_hidden_layers"]

    act = get("hidden_act")
    if act not in ("silu", "swish"):
        raise refuse(f"hidden_act = {act!r} (only 'silu' is supported)")
    if dim % heads:
        raise refuse(f"hidden_size = {dim} does not divide into num_attention_heads = {heads}")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != dim // heads:
        raise refuse(f"head_dim = {head_dim} differs from hidden_size / num_attention_heads = "
                     f"{dim // heads}")
    if model_type == "llama":
        for key in ("attention_bias", "mlp_bias"):
            if get(key):
                raise refuse(f"{key} = true")
    theta = _rope_theta(hf, refuse)

    windows = _layer_windows(hf, model_type, n_layers, get, refuse)

    try:
        cfg = llama.lm_config(
            vocab_size=hf["vocab_size"], dim=dim, n_layers=n_layers, heads=heads,
            kv_heads=kv_heads, mlp_hidden=hf["intermediate_size"], rope_theta=theta,
            norm_eps=get("rms_norm_eps"), tie_embeddings=bool(get("tie_word_embeddings")),
            max_length=get("max_position_embeddings"), attention_bias=model_type == "qwen2",
            windows=windows)
    except (ConfigError, TypeError, ValueError) as e:  # float(None) and the like: a bad value
        raise CheckpointError(f"{source} maps to an invalid seqlab config: {e}") from None
    return cfg


def _gemma3_config(hf: dict, get, refuse, source) -> LMConfig:
    """A ``gemma3_text`` config: everything transformers' Gemma3ForCausalLM computes that seqlab
    does too; softcapping, bidirectional attention and rotary variants other than plain and
    linear are refused."""
    if get("hidden_activation") not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise refuse(f"hidden_activation = {get('hidden_activation')!r} (only "
                     "'gelu_pytorch_tanh' is supported)")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if get(key) is not None:
            raise refuse(f"{key} = {get(key)}")
    for key in ("use_bidirectional_attention", "attention_bias"):
        if get(key):
            raise refuse(f"{key} = true")
    n_layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:
        pattern = get("sliding_window_pattern")
        if not isinstance(pattern, int) or isinstance(pattern, bool) or pattern <= 0:
            raise refuse(f"sliding_window_pattern = {pattern!r} (expected a positive int)")
        types = gemma3.default_layer_types(n_layers, pattern)
    if (not isinstance(types, list) or len(types) != n_layers
            or any(t not in gemma3.LAYER_TYPES for t in types)):
        raise refuse(f"layer_types = {types!r} (expected a list of {n_layers} entries, each "
                     f"{' or '.join(map(repr, gemma3.LAYER_TYPES))})")
    window = get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window <= 0):
        raise refuse(f"sliding_window = {window!r} (expected a positive int or null)")
    local, glob = _gemma3_rope(hf, get, refuse)
    try:
        return gemma3.lm_config(
            vocab_size=hf["vocab_size"], dim=hf["hidden_size"], layer_types=types,
            heads=hf["num_attention_heads"], kv_heads=get("num_key_value_heads"),
            head_dim=get("head_dim"), mlp_hidden=hf["intermediate_size"], window=window,
            local_theta=local["rope_theta"], global_theta=glob["rope_theta"],
            global_rope_scale=glob["factor"], query_pre_attn_scalar=get("query_pre_attn_scalar"),
            norm_eps=get("rms_norm_eps"), tie_embeddings=bool(get("tie_word_embeddings")),
            max_length=get("max_position_embeddings"))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source} maps to an invalid seqlab config: {e}") from None


def _gemma3_rope(hf: dict, get, refuse) -> tuple[dict, dict]:
    """Gemma 3's rotary parameters of the local and the global layers, from either layout
    (transformers 4: rope_theta, rope_local_base_freq, rope_scaling for the global layers;
    transformers 5: rope_parameters per layer type), as ``{"rope_theta", "factor"}``."""
    per_type = hf.get("rope_parameters")
    if isinstance(per_type, dict) and any(isinstance(v, dict) for v in per_type.values()):
        local = dict(per_type.get("sliding_attention") or {})
        glob = dict(per_type.get("full_attention") or {})
    else:
        local = {"rope_theta": get("rope_local_base_freq")}
        glob = dict(hf.get("rope_scaling") or per_type or {})
        glob.setdefault("rope_theta", get("rope_theta"))
    local.setdefault("rope_theta", gemma3.LOCAL_THETA)
    glob.setdefault("rope_theta", gemma3.GLOBAL_THETA)
    out = []
    for which, params in (("sliding_attention", local), ("full_attention", glob)):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in ("default", "linear") or (kind == "linear" and which != "full_attention"):
            raise refuse(f"rope parameters of the {which} layers {params} (only plain rotary "
                         "positions, and linear scaling on the global layers, are supported)")
        extra = sorted(set(params) - {"rope_type", "type", "rope_theta", "factor"})
        if extra:
            raise refuse(f"rope parameters {extra} of the {which} layers in {params}")
        factor = float(params.get("factor", 1.0)) if kind == "linear" else 1.0
        out.append({"rope_theta": float(params["rope_theta"]), "factor": factor})
    return out[0], out[1]


def _rope_theta(hf: dict, refuse) -> float:
    """rope_theta from either config layout (transformers 4: top level + rope_scaling;
    transformers 5: rope_parameters), refusing any rotary variant but the plain one."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise refuse(f"rope_parameters = {params!r} (expected a JSON object)")
    if any(isinstance(v, dict) for v in params.values()):
        raise refuse(f"per-layer-type rope parameters {params}")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        which = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
        raise refuse(f"{which} = {params} (rope type {kind!r}: only plain rotary positions, "
                     "rope_type 'default', are supported)")
    extra = sorted(set(params) - {"rope_type", "type", "rope_theta"})
    if extra:
        raise refuse(f"rope parameters {extra} in {params}")
    factor = hf.get("partial_rotary_factor", params.get("partial_rotary_factor"))
    if factor not in (None, 1, 1.0):
        raise refuse(f"partial_rotary_factor = {factor}")
    theta = params.get("rope_theta", hf.get("rope_theta"))
    return 10000.0 if theta is None else float(theta)


_LAYER_TYPES = ("full_attention", "sliding_attention")


def _layer_windows(hf: dict, model_type: str, n_layers: int, get, refuse) -> list[int | None]:
    """Each layer's sliding window (None: full attention), as transformers computes it.

    llama: none. mistral: ``sliding_window`` on every layer (its modeling code reads no
    ``layer_types``). ministral: ``sliding_window`` where ``layer_types`` says
    ``sliding_attention`` (default: every layer when a window is set). qwen2: only with
    ``use_sliding_window``, on the ``sliding_attention`` layers of ``layer_types``, which
    default to the layers ``>= max_window_layers``.
    """
    if model_type == "llama":
        return [None] * n_layers
    window = get("sliding_window")
    if model_type == "qwen2" and not get("use_sliding_window"):
        window = None
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window <= 0):
        raise refuse(f"sliding_window = {window!r} (expected a positive int or null)")
    types = hf.get("layer_types")
    if types is not None and (not isinstance(types, list) or len(types) != n_layers
                              or any(t not in _LAYER_TYPES for t in types)):
        raise refuse(f"layer_types = {types!r} (expected a list of {n_layers} entries, each "
                     f"{' or '.join(map(repr, _LAYER_TYPES))})")
    if model_type == "mistral":
        slid = "sliding_attention" if window is not None else "full_attention"
        if types is not None and set(types) != {slid}:
            raise refuse(f"layer_types = {types} with model_type 'mistral': transformers' "
                         f"MistralForCausalLM ignores layer_types and attends as "
                         f"{slid!r} on every layer; set model_type 'ministral' (architectures "
                         "['MinistralForCausalLM']) if the layers are meant to differ")
        return [window] * n_layers
    if types is None:
        if model_type == "qwen2":
            first = get("max_window_layers")
            if not isinstance(first, int) or isinstance(first, bool):
                raise refuse(f"max_window_layers = {first!r} (expected an int)")
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
        else:
            types = ["sliding_attention"] * n_layers
    return [window if t == "sliding_attention" else None for t in types]


# -- weights ------------------------------------------------------------------------------------
def _weight_files(folder: Path) -> list[Path]:
    single, index = folder / WEIGHTS, folder / WEIGHTS_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is corrupt ({type(e).__name__}: {e}); expected a "
                                  "JSON object with a 'weight_map' of tensor name -> shard "
                                  "file") from None
        absent = [f for f in files if not (folder / f).is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard(s) absent from {folder}: {absent[:5]}")
        return [folder / f for f in files]
    others = sorted(p.name for p in folder.iterdir()
                    if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
    hint = f" (found {others[:3]}: only safetensors checkpoints are read)" if others else ""
    raise CheckpointError(f"{folder} has neither {WEIGHTS} nor {WEIGHTS_INDEX}{hint}")


def _open(path: Path, device):
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); the file is truncated or "
                              "corrupt") from None


def _catalog(files: list[Path]) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """HF tensor name -> (file, shape), from the headers only."""
    out: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for path in files:
        with _open(path, "cpu") as f:
            for name in f.keys():
                if name in out:
                    raise CheckpointError(f"tensor {name!r} is stored twice: in "
                                          f"{out[name][0].name} and in {path.name}")
                out[name] = (path, tuple(f.get_slice(name).get_shape()))
    return out


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _plan(model: LM, catalog: dict, folder: Path, names: Names) -> dict[str, str]:
    """seqlab name -> HF name of every tensor to load; names the missing, extra, misshapen."""
    tied = model.cfg.tie_embeddings
    expected = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    if tied:
        expected.pop("head.weight")
    plan, unexpected, misshapen = {}, [], []
    for hf_name, (_, shape) in catalog.items():
        if hf_name.endswith(_IGNORED_SUFFIXES) or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed buffers; a tied head is the embedding, as in transformers
        name = names.to_seqlab(hf_name)
        if name is None or name not in expected:
            unexpected.append(hf_name)
        elif shape != expected[name]:
            misshapen.append(f"{hf_name} {shape} (expected {expected[name]})")
        else:
            plan[name] = hf_name
    missing = [names.to_hf(n) or n for n in expected if n not in plan]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
        if misshapen:
            parts.append(f"wrong shapes: {_few(misshapen, 3)}")
        raise CheckpointError(f"the weights in {folder} do not match its {CONFIG}: "
                              + "; ".join(parts))
    return plan


def _load_weights(cfg: LMConfig, folder: Path, dtype: torch.dtype, device, names: Names) -> LM:
    catalog = _catalog(_weight_files(folder))
    with torch.device("meta"):  # no time or memory spent on random weights we overwrite
        model = LM(cfg)
    plan = _plan(model, catalog, folder, names)  # every name and shape checked before a byte is read
    by_file = defaultdict(list)
    for name, hf_name in plan.items():
        by_file[catalog[hf_name][0]].append((name, hf_name))
    state = {}
    for path, pairs in by_file.items():
        with _open(path, device) as f:
            for name, hf_name in pairs:
                try:
                    t = f.get_tensor(hf_name)
                except (SafetensorError, OSError, RuntimeError) as e:
                    raise CheckpointError(f"{path}: tensor {hf_name} cannot be read ({e}); the "
                                          "file is truncated or corrupt") from None
                # one tensor at a time: peak memory is one extra tensor
                state[name] = names.convert(name, t).to(dtype)
    if cfg.tie_embeddings:
        state["head.weight"] = state["embed.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.head.weight = model.embed.weight
    return model.eval()


def _load_tokenizer(folder: Path, hf: dict):
    """The folder's tokenizer: a PretrainedTokenizer (special ids, chat template) for a
    byte-level BPE, the plain corpus Tokenizer for any other ``tokenizer.json``."""
    path = folder / TOKENIZER
    if not path.is_file():
        return None
    from tokenizers import Tokenizer as HFTokenizer

    from seqlab.tokenizer import PretrainedTokenizer
    from seqlab.tokenizer import Tokenizer

    try:
        bpe = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise CheckpointError(f"{path} cannot be read as a tokenizers file ({e})") from None
    decoder = json.dumps(json.loads(bpe.to_str()).get("decoder"))
    if '"ByteLevel"' not in decoder:
        # PretrainedTokenizer spells bytes through the byte-level alphabet; a SentencePiece-style
        # tokenizer.json (Metaspace, byte fallback) decodes correctly only through tokenizers.
        return Tokenizer(bpe)
    tok = PretrainedTokenizer.load(folder)
    # tokenizer_config.json names the special tokens; config.json's ids fill any gap.
    for attr, key in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id")):
        value = hf.get(key)
        if getattr(tok, attr) is None and isinstance(value, int) and not isinstance(value, bool):
            setattr(tok, attr, value)
    return tok


__all__ = ["SUPPORTED", "load_hf", "lm_config_from_hf", "read_hf_config"]

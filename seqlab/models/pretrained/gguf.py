"""Read a GGUF file (llama.cpp's format) into a seqlab LM and its tokenizer.

A GGUF holds metadata (hyper-parameters, the tokenizer) and tensors that are
often quantized (Q4_1, Q8_0, K-quants). Each tensor is dequantized on its
own with ``gguf.quants.dequantize`` into float32, cast to the requested dtype
and placed, so peak memory stays near the final model's size. Names go GGUF
-> Hugging Face -> seqlab (:mod:`seqlab.models.pretrained.llama`).

llama.cpp's converter permutes the rows of each q/k projection so that
rotary pairs sit next to each other (interleaved layout); seqlab rotates
halves (``rotate_half``, Hugging Face's layout), so the permutation is undone
here, head by head.

To support another architecture add an :class:`Architecture` to
``ARCHITECTURES``.

Example:
    >>> model, tok = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.bfloat16)
    >>> logits, state = model(torch.tensor([tok.encode("The capital of France is")]))
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlab.models.io import CheckpointError
from seqlab.models.lm import LM, LMConfig
from seqlab.models.pretrained import gemma3, llama
from seqlab.models.quantize import check_weights, fuse_projections, gguf_blocks, target_format
from seqlab.nn.quant import QuantEmbedding, QuantLinear, check_activations
from seqlab.ops import decode_cpu
from seqlab.tokenizer import PretrainedTokenizer

MAGIC = b"GGUF"
VERSIONS = (2, 3)

# Tensor types this reader dequantizes (through gguf.quants.dequantize; each one is tested).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


class GGUFError(CheckpointError):
    """A GGUF file that is not GGUF, truncated, or of an unsupported architecture, type or tokenizer."""


class Metadata:
    """Typed access to a GGUF file's key/value metadata."""

    def __init__(self, reader, path: Path):
        self.fields = reader.fields
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        if key not in self.fields:
            raise GGUFError(f"{self.path} lacks the metadata key {key!r}")
        return self.get(key)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.require(key) if default is None else self.get(key, default)
        if isinstance(value, list):
            raise GGUFError(f"{self.path} gives {key} per layer ({value[:4]}...); only one value for "
                            "all layers is supported")
        return int(value)


@dataclass(frozen=True)
class Architecture:
    """How one ``general.architecture`` maps onto seqlab.

    Attributes:
        config: ``(metadata, vocab_size, tied) -> LMConfig``.
        rename: GGUF tensor name -> seqlab parameter name (None: unknown).
        unpermute: ``(gguf_name, array, cfg) -> array``: undo converter row
            permutations (identity for tensors that have none).
    """

    config: Callable[[Metadata, int, bool], LMConfig]
    rename: Callable[[str], str | None]
    unpermute: Callable[[str, np.ndarray, LMConfig], np.ndarray]


# -- llama ------------------------------------------------------------------------

_LLAMA_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def gguf_to_hf_name(name: str) -> str | None:
    """The Hugging Face Llama name of a GGUF tensor name (None if unknown).

    Example:
        >>> gguf_to_hf_name("blk.3.attn_q.weight")
        'model.layers.3.self_attn.q_proj.weight'
    """
    m = _BLOCK.match(name)
    if m:
        part = _LLAMA_LAYER.get(m.group(2))
        return None if part is None else f"model.layers.{m.group(1)}.{part}.{m.group(3)}"
    stem, dot, suffix = name.rpartition(".")
    hf = _LLAMA_GLOBAL.get(stem)
    return None if hf is None or suffix not in ("weight", "bias") else f"{hf}.{suffix}"


def _llama_rename(name: str) -> str | None:
    hf = gguf_to_hf_name(name)
    return None if hf is None else llama.hf_to_seqlab_name(hf)


def _llama_config(md: Metadata, vocab_size: int, tied: bool) -> LMConfig:
    a = "llama"
    dim = md.integer(f"{a}.embedding_length")
    heads = md.integer(f"{a}.attention.head_count")
    kv_heads = md.integer(f"{a}.attention.head_count_kv", heads)
    head_dim = dim // heads if heads else 0
    refuse = []
    if md.get(f"{a}.expert_count", 0):
        refuse.append(f"{a}.expert_count = {md.get(f'{a}.expert_count')} (mixture of experts)")
    rope_dims = md.integer(f"{a}.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        refuse.append(f"{a}.rope.dimension_count = {rope_dims} (partial rotary; head_dim is {head_dim})")
    scaling = md.get(f"{a}.rope.scaling.type", "none")
    if scaling not in ("none", "") and md.get(f"{a}.rope.scaling.factor", 1.0) != 1.0:
        refuse.append(f"{a}.rope.scaling.type = {scaling!r} (rope scaling)")
    for key in ("key_length", "value_length"):
        n = md.get(f"{a}.attention.{key}")
        if n is not None and int(n) != head_dim:
            refuse.append(f"{a}.attention.{key} = {n} (head_dim other than dim / heads = {head_dim})")
    if refuse:
        raise GGUFError(f"{md.path} uses options seqlab's llama does not support: {'; '.join(refuse)}")
    declared = md.get(f"{a}.vocab_size")
    if declared is not None and int(declared) != vocab_size:
        raise GGUFError(f"{md.path} declares {a}.vocab_size = {declared} but token_embd.weight has "
                        f"{vocab_size} rows")
    ctx = md.get(f"{a}.context_length")
    return llama.lm_config(
        vocab_size=vocab_size, dim=dim, n_layers=md.integer(f"{a}.block_count"), heads=heads,
        kv_heads=kv_heads, mlp_hidden=md.integer(f"{a}.feed_forward_length"),
        rope_theta=float(md.get(f"{a}.rope.freq_base", 10000.0)),
        norm_eps=float(md.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings=tied, max_length=None if ctx is None else int(ctx))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a q/k projection (rows ``(n_head, 2, d/2)`` -> ``(n_head, d/2, 2)``).

    The converter writes ``w.reshape(n_head, 2, d // 2, ...).swapaxes(1, 2)``: the
    rotary pairs of each head interleaved. This puts them back in halves.
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama_unpermute(name: str, w: np.ndarray, cfg: LMConfig) -> np.ndarray:
    opts = cfg.layers[0].options  # every layer of a GGUF llama has the same heads
    if ".attn_q." in name:
        return unpermute_qk(w, opts["heads"])
    if ".attn_k." in name:
        return unpermute_qk(w, opts["kv_heads"])
    return w


# -- gemma3 -----------------------------------------------------------------------
# llama.cpp's converter stores Gemma's norm weights as 1 + w already (ggml multiplies by the
# weight, as seqlab's RMSNorm does) and leaves q/k rows in halves (NeoX rotary): no unpermute.

_GEMMA3_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _gemma3_rename(name: str) -> str | None:
    m = _BLOCK.match(name)
    if m:
        part = _GEMMA3_LAYER.get(m.group(2))
        hf = None if part is None else f"model.layers.{m.group(1)}.{part}.{m.group(3)}"
    else:
        stem, _, suffix = name.rpartition(".")
        hf = _LLAMA_GLOBAL.get(stem)
        hf = None if hf is None or suffix != "weight" else f"{hf}.{suffix}"
    return None if hf is None else gemma3.hf_to_seqlab_name(hf)


def _gemma3_config(md: Metadata, vocab_size: int, tied: bool) -> LMConfig:
    a = "gemma3"
    dim = md.integer(f"{a}.embedding_length")
    heads = md.integer(f"{a}.attention.head_count")
    n_layers = md.integer(f"{a}.block_count")
    head_dim = md.integer(f"{a}.attention.key_length", 256)
    if md.integer(f"{a}.attention.value_length", head_dim) != head_dim:
        raise GGUFError(f"{md.path}: {a}.attention.value_length differs from key_length "
                        f"{head_dim}; seqlab's attention uses one head width")
    scale_factor = 1.0
    scaling = md.get(f"{a}.rope.scaling.type", "none")
    if scaling == "linear":
        scale_factor = float(md.get(f"{a}.rope.scaling.factor", 1.0))
    elif scaling not in ("none", ""):
        raise GGUFError(f"{md.path}: {a}.rope.scaling.type = {scaling!r} is not supported "
                        "(plain or linear)")
    ctx = md.get(f"{a}.context_length")
    # As llama.cpp reads a gemma3 file: the 62-layer 27B scales queries by dim / heads, the
    # others by the head width (query_pre_attn_scalar is not stored); local layers use
    # rotary base 10,000 and every sixth layer is global.
    scalar = dim // heads if n_layers == 62 else head_dim
    pattern = md.integer(f"{a}.attention.sliding_window_pattern", 6)
    return gemma3.lm_config(
        vocab_size=vocab_size, dim=dim, layer_types=gemma3.default_layer_types(n_layers, pattern),
        heads=heads, kv_heads=md.integer(f"{a}.attention.head_count_kv", heads), head_dim=head_dim,
        mlp_hidden=md.integer(f"{a}.feed_forward_length"),
        window=md.integer(f"{a}.attention.sliding_window", 4096),
        local_theta=gemma3.LOCAL_THETA,
        global_theta=float(md.get(f"{a}.rope.freq_base", gemma3.GLOBAL_THETA)),
        global_rope_scale=scale_factor, query_pre_attn_scalar=scalar,
        norm_eps=float(md.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings=tied, max_length=None if ctx is None else int(ctx))


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(config=_llama_config, rename=_llama_rename, unpermute=_llama_unpermute),
    "gemma3": Architecture(config=_gemma3_config, rename=_gemma3_rename,
                           unpermute=lambda name, w, cfg: w),
}


# -- reading ----------------------------------------------------------------------

def open_gguf(path: str | os.PathLike):
    """A ``gguf.GGUFReader`` for ``path`` after checking magic and version.

    Raises:
        GGUFError: no such file, not GGUF, an unsupported version, a truncated
            or corrupt file.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (magic {head[:4]!r}, expected {MAGIC!r})")
    if len(head) < 8:
        raise GGUFError(f"{path} is truncated: {len(head)} bytes, too short for a GGUF header")
    version = int.from_bytes(head[4:8], "little")
    if version not in VERSIONS:
        swapped = int.from_bytes(head[4:8], "big")
        what = " (a big-endian file)" if swapped in VERSIONS else ""
        raise GGUFError(f"{path} is GGUF version {version}{what}, which is not supported; supported "
                        f"versions: {', '.join(map(str, VERSIONS))} (little-endian)")
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader fails deep inside numpy on short or garbled files
        raise GGUFError(f"{path} is truncated or corrupt ({size} bytes): reading its metadata and "
                        f"tensor table failed ({type(e).__name__}: {e})") from None
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise GGUFError(f"{path} is truncated: its tensors end at byte {end} but the file has {size} bytes")
    return reader


def read_tokenizer(reader, path: str | os.PathLike) -> PretrainedTokenizer:
    """The tokenizer described by a GGUF file's ``tokenizer.*`` metadata.

    Raises:
        GGUFError: no tokenizer data, or an unsupported tokenizer (named).
    """
    path = Path(path)
    md = Metadata(reader, path)
    if "tokenizer.ggml.tokens" not in md:
        raise GGUFError(f"{path} has no tokenizer (tokenizer.ggml.tokens missing)")
    tokens = md.get("tokenizer.ggml.tokens")
    model = md.get("tokenizer.ggml.model", "gpt2")
    if model == "gpt2" and "tokenizer.ggml.merges" not in md:
        raise GGUFError(f"{path} has a byte-level BPE vocabulary but no merges "
                        "(tokenizer.ggml.merges missing)")
    spm = model == "llama"
    if spm and "tokenizer.ggml.scores" not in md:
        raise GGUFError(f"{path} has a SentencePiece vocabulary but no scores "
                        "(tokenizer.ggml.scores missing)")
    if spm and md.get("tokenizer.ggml.remove_extra_whitespaces", False):
        raise GGUFError(f"{path} sets tokenizer.ggml.remove_extra_whitespaces, which is not "
                        "supported; only text kept as it is (false) is")
    # What llama.cpp assumes for a SentencePiece vocabulary when the file leaves it out.
    bos, eos, unk, add_bos = (1, 2, 0, True) if spm else (None, None, None, False)
    try:
        return PretrainedTokenizer.from_gguf_vocab(
            model=model, pre=md.get("tokenizer.ggml.pre"), tokens=tokens,
            merges=md.get("tokenizer.ggml.merges", []),
            token_types=md.get("tokenizer.ggml.token_type"),
            scores=md.get("tokenizer.ggml.scores"),
            bos_id=md.get("tokenizer.ggml.bos_token_id", bos),
            eos_id=md.get("tokenizer.ggml.eos_token_id", eos),
            unk_id=md.get("tokenizer.ggml.unknown_token_id", unk),
            add_bos=bool(md.get("tokenizer.ggml.add_bos_token", add_bos)),
            add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(md.get("tokenizer.ggml.add_space_prefix", True)),
            chat_template=md.get("tokenizer.chat_template"), name=str(path))
    except CheckpointError as e:
        raise GGUFError(str(e)) from None


def dequantize_tensor(tensor) -> np.ndarray:
    """A reader tensor as float32 numpy in PyTorch's ``(out, in)`` layout.

    Raises:
        GGUFError: a tensor type outside ``SUPPORTED_TYPES``.
    """
    from gguf.quants import dequantize

    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TYPES:
        raise GGUFError(f"tensor {tensor.name} has type {kind}, which is not supported; supported "
                        f"types: {', '.join(SUPPORTED_TYPES)}")
    shape = tuple(int(n) for n in reversed(tensor.shape))   # GGUF lists dimensions innermost first
    arr = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if not arr.flags.writeable:  # F32 comes back as a view of the read-only memory map
        arr = arr.copy()
    return arr


def load_gguf(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu", weights: str = "float",
              activations: str = "int8") -> tuple[LM, PretrainedTokenizer]:
    """Load a GGUF file as a seqlab LM (eval mode) and its tokenizer.

    Args:
        path: a ``.gguf`` file.
        dtype: floating dtype of the weights (float32, bfloat16, ...); quantized
            tensors are dequantized to float32 first, then cast.
        device: where the weights are placed.
        weights: ``"float"``, ``"q8"`` or ``"q4"`` (:mod:`seqlab.models.quantize`): linear
            layers and the embedding as blocks, a tensor already in a kernel format kept
            byte for byte (its q/k rows put back in halves, as for float).
        activations: how quantized layers take their input, ``"int8"`` (fast, llama.cpp's
            scheme) or ``"float"`` (exact); see :mod:`seqlab.nn.quant`.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        GGUFError: not a GGUF file, truncated, an unsupported architecture,
            option, tensor type or tokenizer (each named with what is
            supported), missing or unexpected tensors, no tokenizer data.
        ValueError: a dtype that is not floating point.

    Example:
        >>> model, tok = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
        >>> out = seqlab.decoding.generate(model, [tok.encode("def fib(n):")], "greedy", 32)
    """
    result = _load(path, dtype, device, weights, activations)
    _release_heap()
    return result


def _release_heap() -> None:
    """Give freed heap memory back to the system: the reader's many small metadata arrays
    (tokens, merges) leave about 50 MB that glibc would otherwise keep for the process."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _load(path, dtype, device, weights, activations) -> tuple[LM, PretrainedTokenizer]:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"load_gguf(dtype={dtype!r}) is not allowed: expected a floating torch dtype "
                         "such as torch.float32 or torch.bfloat16")
    path = Path(path)
    reader = open_gguf(path)
    md = Metadata(reader, path)
    arch_name = md.get("general.architecture")
    if arch_name not in ARCHITECTURES:
        raise GGUFError(f"{path} has architecture {arch_name!r}, which is not supported; supported "
                        f"architectures: {', '.join(sorted(ARCHITECTURES))}")
    arch = ARCHITECTURES[arch_name]
    tokenizer = read_tokenizer(reader, path)

    tensors = {t.name: t for t in reader.tensors}
    bad = sorted({t.tensor_type.name for t in reader.tensors} - set(SUPPORTED_TYPES))
    if bad:
        first = next(t.name for t in reader.tensors if t.tensor_type.name == bad[0])
        raise GGUFError(f"{path} has tensors of type {', '.join(bad)} (e.g. {first}), which is not "
                        f"supported; supported types: {', '.join(SUPPORTED_TYPES)}")
    if "token_embd.weight" not in tensors:
        raise GGUFError(f"{path} has no token_embd.weight tensor")
    vocab_size = int(tensors["token_embd.weight"].shape[-1])
    tied = "output.weight" not in tensors
    cfg = arch.config(md, vocab_size, tied)
    if tokenizer.vocab_size > vocab_size:
        raise GGUFError(f"{path} has {tokenizer.vocab_size} tokens but only {vocab_size} embedding rows")

    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        model = LM(cfg)
    params = model.state_dict()
    expected = set(params) - ({"head.weight"} if tied else set())
    names, unknown = {}, []
    for name in tensors:
        target = arch.rename(name)
        if target is None or target not in expected:
            unknown.append(name)
        else:
            names[name] = target
    missing = sorted(expected - set(names.values()))
    if missing or unknown:
        raise GGUFError(f"{path} does not match a {arch_name} model: missing {_few(missing)}, "
                        f"unexpected {_few(unknown)}")
    for name, target in names.items():
        want = tuple(params[target].shape)
        got = tuple(int(n) for n in reversed(tensors[name].shape))
        if got != want:
            raise GGUFError(f"{path}: tensor {name} has shape {got}, expected {want} for {target}")

    check_weights(weights)
    check_activations(activations)
    state = {}
    for name, target in names.items():  # one tensor at a time: float32 copies never pile up
        tensor = tensors[name]
        module = model.get_submodule(target.rpartition(".")[0])
        role = "embedding" if isinstance(module, torch.nn.Embedding) else "linear"
        fmt = None
        if target.endswith(".weight") and isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) \
                and tensor.shape[0] % decode_cpu.BLOCK == 0:
            fmt = target_format(weights, role, tensor.tensor_type.name)
        if fmt is None:
            arr = arch.unpermute(name, dequantize_tensor(tensor), cfg)
            state[target] = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)
            del arr
            continue
        shape = tuple(int(n) for n in reversed(tensor.shape))
        raw = np.asarray(tensor.data).reshape(shape[0], -1)  # rows of whole blocks
        blocks = gguf_blocks(arch.unpermute(name, raw, cfg), tensor.tensor_type.name, fmt,
                             lambda: arch.unpermute(name, dequantize_tensor(tensor), cfg))
        if role == "embedding":
            new = QuantEmbedding(blocks, fmt, shape[0], shape[1], dtype=dtype)
        else:
            bias = None if module.bias is None else torch.zeros(shape[0])
            new = QuantLinear(blocks, fmt, shape[0], shape[1], bias=bias, activations=activations)
        parent, _, child = target.rpartition(".")[0].rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        state[target.rpartition(".")[0] + ".blocks"] = blocks
    quantized = isinstance(model.embed, QuantEmbedding)
    if tied and quantized:
        model.head = model.embed.as_head(activations)
        state["head.blocks"] = model.embed.blocks
    elif tied:
        state["head.weight"] = state["embed.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied and not quantized:
        model.head.weight = model.embed.weight
    elif tied:
        model.head.blocks = model.embed.blocks
    return fuse_projections(model).eval(), tokenizer


def _few(names, n: int = 5) -> str:
    names = list(names)
    if not names:
        return "none"
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more

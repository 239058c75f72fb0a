"""One decoding engine for every seqlab model.

Example:
    >>> out = seqlab.decoding.generate(model, [[1, 2, 3], [4, 5]], strategy="sample",
    ...                                max_new_tokens=32, temperature=0.8, top_p=0.95, seed=0)
    >>> out.tokens, out.stats["tokens_per_s"]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from seqlab.config import ConfigError
from seqlab.decoding.engine import GenerateOutput, PromptError, StopChecker, as_rows, check_prompts
from seqlab.decoding.sampling import SamplingConfig
from seqlab.decoding.strategies import STRATEGIES

# Arguments every strategy receives from generate(); anything else is a strategy option.
_COMMON = {"model", "rows", "max_new_tokens", "sampling", "stopper", "on_token", "generator"}


def _is_hf(model) -> bool:
    """A transformers PreTrainedModel? (by class names, so transformers is not imported here)"""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
               for c in type(model).__mro__)


def generate(model, prompt, strategy: str = "greedy", max_new_tokens: int = 32, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             min_p: float | None = None, seed: int | None = None, eos_id: int | None = None,
             stop: Sequence[Sequence[int]] = (),
             on_token: Callable[[int, int], None] | None = None, **options) -> GenerateOutput:
    """Continue each prompt of a batch.

    Args:
        model: a seqlab LM (anything with ``model(tokens, state)`` and ``model.step``), or a
            Hugging Face ``transformers`` causal LM (a ``PreTrainedModel``), which is wrapped in
            ``seqlab.decoding.hf.HFCausalLM`` first; a transformers ``draft=`` option is wrapped
            the same way.
        prompt: a (B, T) or (T,) tensor of ids, or a list of id lists of any lengths.
        strategy: one of ``seqlab.decoding.STRATEGIES``.
        max_new_tokens: tokens to add per row at most.
        temperature, top_k, top_p, min_p: sampling filters (strategy "sample").
        seed: seeds the sampler's own generator (reproducible draws).
        eos_id, stop: a row ends at this id or after any of these id sequences.
        on_token: called as ``on_token(row, token_id)`` as tokens are produced (streaming).
        **options: strategy-specific options (e.g. ``num_beams``, ``draft``), passed to the
            strategy, which rejects unknown ones.

    Returns:
        GenerateOutput with ``tokens`` (new ids per row) and ``stats``.

    Raises:
        PromptError: empty, out-of-vocabulary or too long prompts.
        ConfigError: unknown strategy or bad sampling values.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; known strategies: "
                          f"{', '.join(sorted(STRATEGIES))}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens = {max_new_tokens} is not allowed: expected an int >= 0")
    sampling = SamplingConfig(temperature=float(temperature), top_k=top_k, top_p=top_p, min_p=min_p)
    fn = STRATEGIES[strategy]
    allowed = sorted(set(inspect.signature(fn).parameters) - _COMMON)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"strategy {strategy!r} has no option {', '.join(map(repr, unknown))}; its "
                          f"options: {', '.join(allowed) or '(none)'}")
    if _is_hf(model) or _is_hf(options.get("draft")):  # transformers is imported only here
        from seqlab.decoding.hf import as_seqlab
        model = as_seqlab(model)
        if options.get("draft") is not None:
            options["draft"] = as_seqlab(options["draft"])
    rows = as_rows(prompt)
    check_prompts(model, rows, max_new_tokens)
    device = next(model.parameters()).device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        return fn(model, rows, max_new_tokens=max_new_tokens, sampling=sampling,
                                    stopper=StopChecker(len(rows), eos_id, stop), on_token=on_token,
                                    generator=gen, **options)
    finally:
        model.train(was_training)


__all__ = ["GenerateOutput", "PromptError", "SamplingConfig", "STRATEGIES", "generate"]

"""One decoding engine for every model that implements ``seqlab.decoding.protocol``.

Example:
    >>> out = seqlab.decoding.generate(model, [[1, 2, 3], [4, 5]], strategy="sample",
    ...                                max_new_tokens=32, temperature=0.8, top_p=0.95, seed=0)
    >>> out.tokens, out.stats.tokens_per_s
    >>> generate(model, prompts, "speculative", 64, draft=small, gamma=4)   # greedy-exact
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from seqlab.config import ConfigError
from seqlab.decoding.drafters import HiddenDrafter
from seqlab.decoding.engine import (DecodeStats, GenerateOutput, PromptError, Request, StopChecker,
                                    as_rows, check_prompts)
from seqlab.decoding.hf import as_seqlab
from seqlab.decoding.protocol import Capabilities, Decodable, check_decodable
from seqlab.decoding.sampling import SamplingConfig
from seqlab.decoding.strategies import STRATEGIES, Strategy

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "seed")


def sampling_for(strategy: Strategy, temperature: float | None, top_k: int | None,
                 top_p: float | None, min_p: float | None, seed: int | None) -> SamplingConfig:
    """The sampling settings ``strategy`` runs with, or a ConfigError for options it would ignore.

    No temperature means greedy for every strategy except ``sample`` (which then uses 1.0).
    """
    given = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                   min_p=min_p, seed=seed).items() if v is not None}
    if temperature == 0:  # greedy, which every strategy is or can be
        given.pop("temperature")
    if strategy.samples == "never" and given:
        raise ConfigError(f"strategy {strategy.name!r} does not sample, so "
                          f"{', '.join(sorted(given))} would be ignored; drop "
                          f"{'it' if len(given) == 1 else 'them'}, or use strategy 'sample'")
    if strategy.samples == "optional" and temperature is None and given:
        raise ConfigError(f"{', '.join(sorted(given))} only apply when sampling, and strategy "
                          f"{strategy.name!r} is greedy without a temperature; give a temperature "
                          "(e.g. temperature=1.0) to sample, or drop them")
    if temperature is None:
        temperature = 1.0 if strategy.samples == "always" else 0.0
    return SamplingConfig(temperature=float(temperature), top_k=top_k, top_p=top_p, min_p=min_p)


def generate(model, prompt, strategy: str = "greedy", max_new_tokens: int = 32, *,
             temperature: float | None = None, top_k: int | None = None,
             top_p: float | None = None, min_p: float | None = None, seed: int | None = None,
             eos_id: int | None = None, stop: Sequence[Sequence[int]] = (),
             on_token: Callable[[int, int], bool | None] | None = None, draft=None,
             cached: Sequence | None = None, **options) -> GenerateOutput:
    """Continue each prompt of a batch.

    Args:
        model: any model implementing ``seqlab.decoding.protocol`` (a seqlab LM, ...), or a
            Hugging Face ``transformers`` causal LM, wrapped in ``seqlab.decoding.hf.HFCausalLM``.
        prompt: a (B, T) or (T,) tensor of ids, or a list of id lists of any lengths.
        strategy: one of ``seqlab.decoding.STRATEGIES``.
        max_new_tokens: tokens to add per row at most.
        temperature, top_k, top_p, min_p, seed: sampling. No temperature means greedy for
            every strategy but ``sample`` (which then samples at 1.0); drafting strategies
            sample only when given a temperature; beam searches and ``greedy`` take none.
        eos_id, stop: a row ends at this id or after any of these id sequences.
        on_token: called as ``on_token(row, token_id)`` as tokens are produced (streaming);
            a true return ends that row after this token (its own limit, a client that left).
            Beam searches call it once a row's search is over and ignore the return.
        draft: the draft model of ``speculative`` and ``tree`` (same vocabulary), or a
            drafter trained on the target's hidden states (``seqlab.decoding.drafters.load``;
            ``tree`` takes those that draft every depth at once, heads and transfer); for
            ``ngram`` and ``ngram-tree``, optionally a ``seqlab.decoding.drafters.NGramTable``
            that persists across calls (every call reads and extends it).
        cached: per row None or ``(n, state)``: the row's first ``n`` tokens already ran
            into ``state`` (a one-row state of ``model``, e.g. kept from an earlier call), so
            only the rest of the prompt runs; a draft model still reads the whole row.
        **options: the strategy's options, the fields of its Config (e.g. ``num_beams``,
            ``gamma``), validated there.

    Returns:
        GenerateOutput with ``tokens`` (new ids per row) and ``stats`` (a DecodeStats).

    Raises:
        PromptError: empty, out-of-vocabulary or too long prompts.
        ConfigError: unknown strategy or option, bad values, or sampling options that the
            strategy would ignore.
        TypeError: a model that does not implement the decoding protocol.
    """
    spec, cfg, sampling, model, draft, rows = _prepare(
        model, prompt, strategy, max_new_tokens, temperature, top_k, top_p, min_p, seed, draft,
        options)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=model.device).manual_seed(seed)
    req = Request(rows, max_new_tokens, sampling, StopChecker(len(rows), eos_id, stop), on_token,
                  gen, draft, _check_cached(cached, rows))
    modules = [m for m in (model, draft) if isinstance(m, torch.nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            return spec.fn(model, req, cfg)
    finally:
        for m, t in zip(modules, was_training):
            m.train(t)


def _check_cached(cached, rows: list[list[int]]) -> list | None:
    if cached is None:
        return None
    cached = list(cached)
    if len(cached) != len(rows):
        raise ConfigError(f"cached has {len(cached)} entries for {len(rows)} prompts; give one "
                          "per prompt (None where nothing is cached)")
    for b, c in enumerate(cached):
        if c is None:
            continue
        n, state = c
        if not 0 < n < len(rows[b]):
            raise PromptError(f"cached[{b}] holds {n} tokens of a prompt of {len(rows[b])}; at "
                              "least the prompt's last token must run (keep the state of all "
                              "but the last token)")
        if getattr(state, "batch_size", 1) != 1:
            raise ConfigError(f"cached[{b}] is a state of {state.batch_size} rows; give each "
                              "prompt its own one-row state")
    return cached


def check_request(model, prompt, strategy: str = "greedy", max_new_tokens: int = 32, *,
                  temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, min_p: float | None = None, seed: int | None = None,
                  draft=None, **options) -> None:
    """Raise what ``generate`` would raise for these arguments, without decoding (a server
    checks each request so before batching it with others)."""
    _prepare(model, prompt, strategy, max_new_tokens, temperature, top_k, top_p, min_p, seed,
             draft, options)


def _prepare(model, prompt, strategy, max_new_tokens, temperature, top_k, top_p, min_p, seed,
             draft, options):
    """The validated pieces of a generate call: (strategy, its config, sampling, model, draft,
    rows)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; known strategies: "
                          f"{', '.join(sorted(STRATEGIES))}")
    spec = STRATEGIES[strategy]
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens = {max_new_tokens!r} is not allowed: expected an int >= 0")
    sampling = sampling_for(spec, temperature, top_k, top_p, min_p, seed)
    unknown = sorted(set(options) - set(spec.Config.field_names()))
    if unknown:
        hint = " (sampling options: temperature, top_k, top_p, min_p, seed)"
        raise ConfigError(f"strategy {strategy!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(spec.Config.field_names()) or '(none)'}"
                          + (hint if strategy in ("greedy", "sample") else ""))
    cfg = spec.Config.from_dict(options)
    model = as_seqlab(model)
    check_decodable(model)
    if spec.needs_draft and isinstance(draft, HiddenDrafter):
        draft.check_target(model)   # a trained drafter: the target's own hidden states
    elif spec.needs_draft:
        if draft is None:
            raise ConfigError(f"strategy {strategy!r} needs a draft model: pass draft=<a model "
                              "with the target's vocabulary>")
        draft = as_seqlab(draft)
        check_decodable(draft, "draft")
        if draft.vocab_size != model.vocab_size:
            raise ConfigError(f"the draft model's vocab_size ({draft.vocab_size}) differs from the "
                              f"target's ({model.vocab_size}); speculative decoding needs the "
                              "same vocabulary")
    elif draft is not None and spec.draft_state is not None:
        if not isinstance(draft, spec.draft_state):
            raise ConfigError(f"strategy {strategy!r} takes as draft a "
                              f"{spec.draft_state.__name__} (kept across calls), not a "
                              f"{type(draft).__name__}")
    elif draft is not None:
        raise ConfigError(f"strategy {strategy!r} takes no draft model; drafts are for "
                          f"{', '.join(n for n, s in sorted(STRATEGIES.items()) if s.needs_draft)}")
    rows = as_rows(prompt)
    check_prompts(model, rows, max_new_tokens)
    return spec, cfg, sampling, model, draft, rows


__all__ = ["Capabilities", "DecodeStats", "Decodable", "GenerateOutput", "PromptError",
           "SamplingConfig", "STRATEGIES", "SAMPLING_OPTIONS", "check_decodable", "check_request",
           "generate", "sampling_for"]

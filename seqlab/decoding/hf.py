"""Run a Hugging Face ``transformers`` causal LM through seqlab's decoding engine.

``HFCausalLM(model)`` wraps a ``*ForCausalLM`` (Llama, Mistral, Qwen, GPT-2 style
models whose cache is a plain ``DynamicCache`` of full-attention layers) in the
decoding protocol (``seqlab/decoding/protocol.py``):

* ``adapter(tokens (B, T), state, last_only=False) -> (logits, state)``
* ``adapter.step(token (B,), state) -> (logits (B, V), state)``
* ``vocab_size``, ``max_length``, ``device``, ``capabilities`` (none of the optional
  ones), ``init_state``; the adapter is an ``nn.Module`` holding the model.

The state is an ``HFState``: the per-layer key/value tensors ``(B, H, S, Dh)``
of the HF cache, a boolean ``mask (B, S)`` of the slots that hold a live token,
and ``lengths`` (live tokens per row, which is also each row's next position).
HF caches are rectangular, so rows of different lengths (ragged prompts, rows
of a speculative batch that accepted different numbers of tokens) keep masked
scratch slots; every call passes the HF model ``attention_mask = [mask, 1...]``
and ``position_ids = lengths + arange(T)``, so a row never sees another row's
padding and its positions are its own. ``truncate`` rewinds rows and compacts
the live slots to the left (keys already carry their rotary positions, so
moving them is safe); ``cat`` pads to the longest cache with masked slots.

States are values, as everywhere in seqlab: each call builds a fresh
``DynamicCache`` around the state's tensors (``DynamicCache.update``
concatenates, never writes into them), so a kept state is a snapshot.

Example:
    >>> from transformers import AutoModelForCausalLM
    >>> hf = AutoModelForCausalLM.from_pretrained("...")
    >>> seqlab.decoding.generate(hf, [[1, 2, 3], [4, 5]], "greedy", 16)   # wrapped for you
    >>> seqlab.decoding.generate(HFCausalLM(hf), [[1, 2, 3]], "beam", 16, num_beams=4)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.decoding.protocol import Capabilities
from seqlab.state import State, StateError


def is_hf_model(model) -> bool:
    """True for a ``transformers`` ``PreTrainedModel`` (checked without importing transformers)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
               for c in type(model).__mro__)


@dataclass(frozen=True)
class HFState(State):
    """A Hugging Face cache as a seqlab state (see the module docstring).

    Attributes:
        keys, values: per layer, ``(B, H_kv, S, Dh)``.
        mask: ``(B, S)`` bool, True where a slot holds a live token.
        lengths: live tokens per row (== ``mask.sum(1)``).
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    mask: Tensor
    lengths: tuple[int, ...]

    can_truncate: ClassVar[bool] = True

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def slots(self) -> int:
        return self.mask.shape[1]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def select(self, index) -> "HFState":
        idx = index.tolist() if isinstance(index, Tensor) else [int(i) for i in index]
        t = torch.as_tensor(idx, dtype=torch.long, device=self.mask.device)
        return HFState(tuple(k.index_select(0, t) for k in self.keys),
                       tuple(v.index_select(0, t) for v in self.values),
                       self.mask.index_select(0, t), tuple(self.lengths[i] for i in idx))

    def truncate(self, length: int | Sequence[int]) -> "HFState":
        """Rewind every row to ``length`` live tokens (an int or one per row); compacts the cache."""
        new = (length,) * self.batch_size if isinstance(length, int) else tuple(int(n) for n in length)
        if len(new) != self.batch_size:
            raise StateError(f"truncate got {len(new)} lengths for a cache of {self.batch_size} rows")
        for b, (n, old) in enumerate(zip(new, self.lengths)):
            if not 0 <= n <= old:
                raise StateError(f"cannot truncate row {b} of length {old} to {n}: "
                                 "a cache can only rewind to a length between 0 and its own")
        dev = self.mask.device
        n_t = torch.tensor(new, device=dev)
        hi = max(new, default=0)
        prefix = torch.arange(hi, device=dev)[None] < n_t[:, None]  # the new (left-aligned) mask
        if hi <= self.slots and bool((self.mask[:, :hi] == prefix).all()):
            # live slots already form each row's prefix: a slice does it (a view; states never
            # write into their tensors)
            return HFState(tuple(k[:, :, :hi] for k in self.keys),
                           tuple(v[:, :, :hi] for v in self.values), prefix, new)
        keep = self.mask & (self.mask.long().cumsum(1) <= n_t[:, None])
        # live slots first, in order (stable sort), then scratch
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :hi]

        def gather(t: Tensor) -> Tensor:
            B, H, _, D = t.shape
            return t.gather(2, order[:, None, :, None].expand(B, H, hi, D))

        return HFState(tuple(gather(k) for k in self.keys), tuple(gather(v) for v in self.values),
                       prefix, new)

    @classmethod
    def cat(cls, states: Sequence["HFState"]) -> "HFState":
        if not states:
            raise StateError("HFState.cat needs at least one state")
        n_layers = {len(s.keys) for s in states}
        if len(n_layers) != 1:
            raise StateError(f"cannot join HF caches with different layer counts {sorted(n_layers)}")
        hi = max(s.slots for s in states)

        def pad(t: Tensor) -> Tensor:  # pad the slot dim (-2) to hi
            return F.pad(t, (0, 0, 0, hi - t.shape[-2]))

        keys = tuple(torch.cat([pad(s.keys[i]) for s in states]) for i in range(len(states[0].keys)))
        values = tuple(torch.cat([pad(s.values[i]) for s in states])
                       for i in range(len(states[0].values)))
        mask = torch.cat([F.pad(s.mask, (0, hi - s.slots), value=False) for s in states])
        return HFState(keys, values, mask, sum((s.lengths for s in states), ()))


class HFCausalLM(nn.Module):
    """A transformers causal LM behind the seqlab model contract (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "config"):
            raise TypeError(f"HFCausalLM needs a transformers causal LM, got {type(model).__name__}")
        self.model = model
        config = model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        max_len = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
        # transformers >= 5.2x names the cache argument ``cache``; earlier ``past_key_values``
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # the head at the last position only, where the model's forward offers it
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params),
                              None)
        self.vocab_size = int(text.vocab_size)
        self.max_length = int(max_len) if max_len else None

    capabilities = Capabilities()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HFState:
        """The empty state: no cached slots."""
        mask = torch.zeros(batch_size, 0, dtype=torch.bool, device=device or self.device)
        return HFState((), (), mask, (0,) * batch_size)

    # -- the two faces ------------------------------------------------------------
    def forward(self, tokens: Tensor, state: HFState | None = None, *,
                last_only: bool = False) -> tuple[Tensor, HFState]:
        """``tokens: (B, T)`` -> ``logits: (B, T, V)`` (``(B, V)`` if ``last_only``), new state."""
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            raise ValueError(f"the model expects token ids of shape (batch, length), got "
                             f"{getattr(tokens, 'shape', type(tokens).__name__)}")
        from transformers import DynamicCache

        B, T = tokens.shape
        dev = tokens.device
        hs = self._unwrap(state, B)
        if hs is None or hs.slots == 0:
            cache = DynamicCache()
            past_mask = torch.zeros(B, 0, dtype=torch.bool, device=dev)
            start = torch.zeros(B, dtype=torch.long, device=dev) if hs is None else \
                torch.tensor(hs.lengths, device=dev)
        else:
            cache = DynamicCache(ddp_cache_data=list(zip(hs.keys, hs.values)))
            past_mask = hs.mask.to(dev)
            start = torch.tensor(hs.lengths, device=dev)
        mask = torch.cat([past_mask, torch.ones(B, T, dtype=torch.bool, device=dev)], 1)
        position_ids = start[:, None] + torch.arange(T, device=dev)
        extra = {self._cache_arg: cache}
        if last_only and self._keep_arg is not None:
            extra[self._keep_arg] = 1
        out = self.model(input_ids=tokens, attention_mask=mask.long(), position_ids=position_ids,
                         use_cache=True, **extra)
        cache = out.past_key_values
        keys, values = [], []
        for i, layer in enumerate(cache.layers):
            if type(layer).__name__ != "DynamicLayer":
                raise NotImplementedError(
                    f"HFCausalLM supports caches of plain full-attention layers; layer {i} of "
                    f"{type(self.model).__name__} uses {type(layer).__name__}")
            keys.append(layer.keys)
            values.append(layer.values)
        lengths = tuple(int(n) + T for n in start.tolist())
        logits = out.logits[:, -1] if last_only else out.logits
        return logits, HFState(tuple(keys), tuple(values), mask, lengths)

    def step(self, token: Tensor, state: HFState) -> tuple[Tensor, HFState]:
        """``token: (B,)`` -> ``logits: (B, V)`` and the new state."""
        if not isinstance(token, Tensor) or token.dim() != 1:
            raise ValueError(f"step expects token ids of shape (batch,), got "
                             f"{getattr(token, 'shape', type(token).__name__)}")
        logits, state = self(token[:, None], state)
        return logits[:, 0], state

    @staticmethod
    def _unwrap(state, batch: int) -> HFState | None:
        if state is None:
            return None
        if not isinstance(state, HFState):
            raise StateError(f"HFCausalLM was given a {type(state).__name__}; it needs the state "
                             "returned by an earlier call")
        if state.batch_size != batch:
            raise StateError(f"the state holds {state.batch_size} rows but the tokens {batch}")
        return state


def as_seqlab(model):
    """``model`` itself, or ``HFCausalLM(model)`` when it is a transformers model."""
    return HFCausalLM(model) if is_hf_model(model) else model


__all__ = ["HFCausalLM", "HFState", "as_seqlab", "is_hf_model"]

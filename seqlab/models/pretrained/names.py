"""Tensor-name maps between Hugging Face checkpoints and seqlab, one per architecture.

A map is written once as ``{hf_template: seqlab_template}`` for the per-layer tensors (with
``{i}`` for the layer) plus the global ones; :class:`NameMap` turns it into both directions.

Example:
    >>> names = NameMap({"model.layers.{i}.mlp.up_proj.weight": "blocks.{i}.mlp.up_proj.weight"},
    ...                 {"model.norm.weight": "norm.weight"})
    >>> names.to_seqlab("model.layers.3.mlp.up_proj.weight")
    'blocks.3.mlp.up_proj.weight'
"""

from __future__ import annotations

import re


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


class NameMap:
    def __init__(self, layer: dict[str, str], glob: dict[str, str]):
        self.glob = dict(glob)
        self._to_seqlab = [(_pattern(hf), sl) for hf, sl in layer.items()]
        self._to_hf = [(_pattern(sl), hf) for hf, sl in layer.items()]

    def to_seqlab(self, name: str) -> str | None:
        """The seqlab parameter name of a Hugging Face tensor name (None if unknown)."""
        if name in self.glob:
            return self.glob[name]
        return self._match(self._to_seqlab, name)

    def to_hf(self, name: str) -> str | None:
        """The Hugging Face tensor name of a seqlab parameter name (None if unknown)."""
        for hf, sl in self.glob.items():
            if sl == name:
                return hf
        return self._match(self._to_hf, name)

    @staticmethod
    def _match(pairs, name: str) -> str | None:
        for pat, target in pairs:
            m = pat.match(name)
            if m:
                return target.format(i=m.group(1))
        return None

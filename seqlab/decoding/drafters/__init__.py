"""Drafters: what proposes the tokens a speculative strategy verifies.

Training-free drafters read the context alone (``lookup``: prompt lookup, the adaptive
n-gram table). Trained drafters read the target's own hidden states (``base``): one file
per kind, registered in ``TRAINED`` below, trained by ``seqlab train-draft`` (``train``)
and passed as ``draft`` to the ``speculative`` strategy (a chain) or, for the kinds that
draft every depth at once, to ``tree``.

Example:
    >>> drafter = seqlab.decoding.drafters.load("drafters/smollm2-chimera")
    >>> generate(model, prompts, "speculative", 64, draft=drafter)
"""

from seqlab.decoding.drafters.base import Context, DrafterConfig, HiddenDrafter, build, load
from seqlab.decoding.drafters.chimera import Chimera
from seqlab.decoding.drafters.heads import Heads
from seqlab.decoding.drafters.lookup import NGramDrafter, NGramTable, PromptLookup
from seqlab.decoding.drafters.transfer import Transfer

DRAFTERS = {"prompt-lookup": PromptLookup, "ngram": NGramDrafter}   # training-free, per row
TRAINED: dict[str, type[HiddenDrafter]] = {   # trained on the target's hidden states
    "heads": Heads,
    "chimera": Chimera,
    "transfer": Transfer,
}

__all__ = ["Chimera", "Context", "DRAFTERS", "DrafterConfig", "Heads", "HiddenDrafter",
           "NGramDrafter", "NGramTable", "PromptLookup", "TRAINED", "Transfer", "build", "load"]

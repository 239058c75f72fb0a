"""Text embeddings from any seqlab LM: an encoder (bidirectional mask) or a decoder (causal).

``Embedder(model, tokenizer, EmbedConfig(...)).embed(texts)`` returns one unit vector per text
(N, dim). Pooling over the final hidden states:

- ``mean``: the mean over the text's tokens (encoders, and decoders as a baseline);
- ``last``: the last token's state (a decoder's only position that has read everything);
- ``prompt``: the text inside a two-level instruction (a task line naming what the text is,
  then a line asking for its meaning in one word) and the last token's state: the zero-shot
  decoder embedding of "From Generator to Embedder" (its hierarchical prompt, in our words).
  Queries and documents get their own task lines (``kind``).

The mask follows the model: ``bidirectional`` for an MLM-trained encoder, ``causal`` for a
decoder (``model(tokens, prefix=lengths)``; padding after a row is never seen by its tokens,
proven in tests/mixers/test_bidirectional.py). Rows are sorted by length before batching.

``LM.embed`` is the token table (a checkpoint key), so the text embedder is this separate
object; ``seqlab embed MODEL --input FILE`` is its command.

Example:
    >>> emb = Embedder(model, tokenizer, EmbedConfig(pooling="prompt"))
    >>> q = emb.embed(["Return the sum of a list."], kind="query")          # (1, dim)
    >>> d = emb.embed([source_a, source_b])                                 # (2, dim)
    >>> (q @ d.T).argmax()                                                   # the best match
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from seqlab.config import Config, require
from seqlab.models.lm import LM

POOLINGS = ("mean", "last", "prompt")
MASKS = ("causal", "bidirectional")
KINDS = ("document", "query")


@dataclass(frozen=True)
class EmbedConfig(Config):
    """How texts become vectors.

    Attributes:
        pooling: mean | last | prompt (see the module docstring).
        mask: causal | bidirectional; None = bidirectional for a model trained with the MLM
            objective, causal otherwise (the caller decides, e.g. from the run config).
        max_tokens: a text's tokens at most (the text is cut, the prompt's words are kept).
        batch_size: texts per forward call.
        normalize: return unit vectors (cosine similarity is then a dot product).
        document_task, query_task: the task line of the prompt for each kind of text.
        summary: the prompt's closing line; the last token's state is the embedding.
    """

    pooling: str = "mean"
    mask: str | None = None
    max_tokens: int = 256
    batch_size: int = 16
    normalize: bool = True
    document_task: str = "This is a piece of Python code."
    query_task: str = "This is a description of what a piece of Python code does."
    summary: str = 'In one word, its purpose is:"'

    def validate(self) -> None:
        require(self.pooling in POOLINGS, self, "pooling", " | ".join(POOLINGS))
        require(self.mask is None or self.mask in MASKS, self, "mask",
                " | ".join(MASKS) + " or None (the model's own)")
        require(self.max_tokens > 0, self, "max_tokens", "a positive int")
        require(self.batch_size > 0, self, "batch_size", "a positive int")


class Embedder:
    """An LM and its tokenizer as a text embedder (see the module docstring).

    Args:
        model: a ``seqlab.models.LM`` (its ``features`` give the hidden states).
        tokenizer: the model's tokenizer (``encode(text) -> ids``).
        cfg: an :class:`EmbedConfig`; its ``mask`` None means causal here.
    """

    def __init__(self, model: LM, tokenizer, cfg: EmbedConfig = EmbedConfig()):
        if not isinstance(model, LM):
            raise ValueError(f"text embeddings need a seqlab LM (kind lm); got "
                             f"{type(model).__name__}, whose hidden states are not per token")
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.mask = cfg.mask or "causal"

    def token_ids(self, text: str, kind: str = "document") -> list[int]:
        """The ids the model reads for ``text``: cut to ``max_tokens``, inside the prompt for
        ``prompt`` pooling (the cut falls on the text, never on the instruction)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        cfg = self.cfg
        if cfg.pooling != "prompt":
            return self.tokenizer.encode(text)[:cfg.max_tokens] or self.tokenizer.encode(" ")
        task = cfg.query_task if kind == "query" else cfg.document_task
        head = self.tokenizer.encode(task + "\n")
        tail = self.tokenizer.encode("\n" + cfg.summary)
        body = self.tokenizer.encode(text)[:max(1, cfg.max_tokens - len(head) - len(tail))]
        return head + body + tail

    def forward(self, batch: list[list[int]]) -> Tensor:
        """Pooled, optionally normalised vectors (B, dim) of id lists, with gradients if
        enabled (contrastive tuning calls this)."""
        lengths = torch.tensor([len(ids) for ids in batch], device=self.model.device)
        T = int(lengths.max())
        tokens = torch.zeros(len(batch), T, dtype=torch.long, device=self.model.device)
        for row, ids in enumerate(batch):
            tokens[row, :len(ids)] = torch.tensor(ids)
        prefix = lengths if self.mask == "bidirectional" else None
        hidden, _ = self.model.features(tokens, prefix=prefix)                  # (B, T, D)
        if self.cfg.pooling == "mean":
            valid = (torch.arange(T, device=tokens.device)[None] < lengths[:, None])
            pooled = (hidden * valid[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)
        else:
            pooled = hidden[torch.arange(len(batch)), lengths - 1]
        return F.normalize(pooled, dim=-1) if self.cfg.normalize else pooled

    @torch.no_grad()
    def embed(self, texts: list[str], kind: str = "document", progress: bool = False) -> Tensor:
        """Vectors (N, dim) of ``texts`` in their order (``kind``: document or query, which
        chooses the prompt's task line)."""
        if isinstance(texts, str):
            raise ValueError("embed takes a list of texts; wrap one text as [text]")
        return self.embed_ids([self.token_ids(t, kind) for t in texts],
                              desc=f"embed {kind} texts", progress=progress)

    @torch.no_grad()
    def embed_ids(self, ids: list[list[int]], desc: str = "embed", progress: bool = False
                  ) -> Tensor:
        """Vectors (N, dim) of id lists from ``token_ids``, in their order, in eval mode;
        batches of similar lengths (little padding)."""
        out = torch.empty(len(ids), self.model.cfg.dim)
        if not ids:
            return out
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        bs = self.cfg.batch_size
        for start in tqdm(range(0, len(order), bs), desc=desc, unit="batch",
                          disable=not progress, dynamic_ncols=True):
            rows = order[start:start + bs]
            out[rows] = self.forward([ids[i] for i in rows]).float().cpu()
        self.model.train(was_training)
        return out

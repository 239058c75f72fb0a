"""Requests that arrive together decode together: one engine call per batch.

Every request becomes a ``Job`` of one or more rows (its prompts times ``n``). A
single worker thread takes the oldest waiting job, waits a few milliseconds for
companions, and joins every waiting job that decodes alike (same strategy, options
and sampling settings) into one ``seqlab.decoding.generate`` call of ragged rows,
up to ``max_rows``. Each row has its own token budget and stop strings: the engine's
``on_token`` callback ends a row once it has its tokens, met a stop string, or its
client went away, and the engine drops the row from the batch at once.

Events go back to each job's asyncio queue on the server's event loop: ``Text`` as
text becomes safe to show, ``End`` per row, then ``Done`` (or ``Failed``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from seqlab.decoding import STRATEGIES, generate
from seqlab.decoding.stream import TextStops
from seqlab.serve.sessions import Sessions


@dataclass(frozen=True)
class Text:
    row: int
    text: str


@dataclass(frozen=True)
class End:
    row: int
    finish_reason: str      # "stop" (end token or stop string) or "length"
    tokens: int


@dataclass(frozen=True)
class Done:
    stats: dict             # the batch's decoding figures


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class Finished:
    """What became of a job (``Batcher.finished`` keeps the latest)."""

    id: int
    cancelled: bool          # its client left before the end
    tokens: list[int]        # tokens each row generated


_ids = itertools.count()


@dataclass(eq=False)
class Job:
    """One request's rows and how to decode them (validated before it is submitted)."""

    rows: list[list[int]]
    max_tokens: int
    strategy: str
    options: dict
    sampling: dict           # temperature, top_k, top_p, min_p, seed: those given
    stops: list[str]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # the client left: its rows end at their next token
    session: str | None = None           # keep the state after this one-row job under this id
    cached: tuple | None = None          # (n, state): the row's first n tokens already ran
    id: int = field(default_factory=lambda: next(_ids))

    def key(self) -> tuple:
        """Jobs with equal keys may share an engine call."""
        key = (self.strategy, json.dumps(self.options, sort_keys=True),
               tuple(sorted(self.sampling.items())))
        if self.sampling.get("seed") is not None:
            key += (self.id,)   # a seeded request's samples must not depend on its companions
        if not STRATEGIES[self.strategy].streams:
            key += (self.max_tokens,)   # its rows cannot end early: one budget per call
        return key

    def post(self, event) -> None:
        """Hand ``event`` to the job's queue (called from the worker thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Batcher:
    """The worker thread that runs the engine for every job.

    Args:
        model, tokenizer: what the server decodes with.
        draft: the draft model for ``speculative`` and ``tree`` (or None).
        max_rows: rows per engine call at most.
        window_s: how long the oldest job waits for companions.
    """

    def __init__(self, model, tokenizer, draft=None, max_rows: int = 32, window_s: float = 0.005,
                 sessions: Sessions | None = None):
        self.model, self.tokenizer, self.draft = model, tokenizer, draft
        self.sessions = sessions if sessions is not None else Sessions()
        self.max_rows, self.window_s = max_rows, window_s
        # A model whose prompts are sources (an encoder-decoder) ends its targets with its own id.
        self.reads_source = model.capabilities.source
        self.eos_id = model.end_id if self.reads_source else getattr(tokenizer, "eos_id", None)
        self._cv = threading.Condition()
        self._waiting: list[Job] = []
        self._closed = False
        self.batches = 0          # engine calls made (for /health and tests)
        self.finished: collections.deque[Finished] = collections.deque(maxlen=256)
        self._thread = threading.Thread(target=self._work, name="seqlab-decoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self._cv:
            self._waiting.append(job)
            self._cv.notify_all()

    @property
    def waiting_rows(self) -> int:
        with self._cv:
            return sum(len(j.rows) for j in self._waiting)

    # -- the worker -------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run(batch)
            except Exception as e:   # the worker must outlive any one batch
                for job in batch:
                    job.post(Failed(f"decoding failed: {type(e).__name__}: {e}"))

    def _take(self) -> list[Job] | None:
        with self._cv:
            while not self._waiting and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.window_s
            while (sum(len(j.rows) for j in self._waiting) < self.max_rows
                   and (left := deadline - time.monotonic()) > 0 and not self._closed):
                self._cv.wait(left)
            self._waiting = [j for j in self._waiting if not j.cancelled]
            if not self._waiting:
                return []
            key, batch, rest, rows = self._waiting[0].key(), [], [], 0
            for job in self._waiting:
                if job.key() == key and (not batch or rows + len(job.rows) <= self.max_rows):
                    batch.append(job)
                    rows += len(job.rows)
                else:
                    rest.append(job)
            self._waiting = rest
            return batch

    def _run(self, batch: list[Job]) -> None:
        owner = [(job, i) for job in batch for i in range(len(job.rows))]
        texts = [TextStops(self.tokenizer.decode_bytes, job.stops) for job, _ in owner]
        counts = [0] * len(owner)
        eos = self.eos_id

        def on_token(r: int, token: int) -> bool:
            job, i = owner[r]
            if job.cancelled:
                return True
            counts[r] += 1
            if token != eos and token < self.tokenizer.vocab_size:   # else a model id, no text
                delta = texts[r].add(token)
                if delta:
                    job.post(Text(i, delta))
            return texts[r].stopped or counts[r] >= job.max_tokens

        first = batch[0]
        spec = STRATEGIES[first.strategy]
        self.batches += 1
        cached = [job.cached if job.cached else None for job, _ in owner]
        rows = [list(r) for job in batch for r in job.rows]
        if self.reads_source:   # each row is a source, encoded once into its state
            rows, cached = self.model.source_prompts(rows)
        out = generate(self.model, rows,
                       first.strategy, max(job.max_tokens for job in batch),
                       draft=self.draft if spec.needs_draft else None, eos_id=eos,
                       on_token=on_token, cached=cached if any(cached) else None,
                       **first.sampling, **first.options)
        start = 0
        for job in batch:
            n = len(job.rows)
            self.finished.append(Finished(job.id, job.cancelled, counts[start:start + n]))
            start += n
        for r, (job, i) in enumerate(owner):
            rest = texts[r].finish()
            if rest:
                job.post(Text(i, rest))
            toks = out.tokens[r]
            ended = texts[r].stopped or (eos is not None and toks and toks[-1] == eos)
            reason = "length" if not ended and counts[r] >= job.max_tokens else "stop"
            job.post(End(i, reason, counts[r]))
        stats = _stats(out.stats, len(owner), self._token_text)
        for r, (job, _) in enumerate(owner):
            if job.session is not None and not job.cancelled:
                self._keep(job, out.tokens[r])
            job.post(Done({**stats, "cached_tokens": job.cached[0] if job.cached else 0}))

    def _keep(self, job: Job, answer: list[int]) -> None:
        """Store the state after the job's prompt and answer for the session's next request."""
        tokens = job.rows[0] + list(answer)
        n, state = job.cached or (0, None)
        with torch.no_grad():
            _, state = self.model(torch.tensor([tokens[n:]], device=self.model.device), state,
                                  last_only=True)
        self.sessions.keep(job.session, tokens, state)

    def _token_text(self, token: int) -> str:
        if token >= self.tokenizer.vocab_size:
            return ""   # a model's own id (an encoder-decoder's start or end), not text
        return self.tokenizer.decode_bytes([token]).decode("utf-8", "replace")


def _stats(stats, rows: int, text: Callable[[int], str]) -> dict:
    """What the server reports of an engine call (the ``seqlab`` field of a response); tree
    strategies add their draft trees with each token's text."""
    out = {"strategy": stats.strategy, "batch_rows": rows, "new_tokens": stats.new_tokens,
           "target_calls": stats.target_calls, "wall_s": round(stats.wall_s, 4),
           "tokens_per_s": round(stats.tokens_per_s, 2)}
    if stats.verify_calls:
        out["mean_accepted"] = round(stats.mean_accepted, 3)
        out["tokens_per_call"] = round(stats.tokens_per_call, 3)
    if stats.trees:
        out["trees"] = [{"root": t["root"], "root_text": text(t["root"]),
                         "nodes": [[*n, text(n[3])] for n in t["nodes"]],
                         "accepted": t["accepted"]} for t in stats.trees]
    return out


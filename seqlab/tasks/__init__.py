"""Data: real corpora (and, with the probes issue, synthetic tasks)."""

from seqlab.tasks.corpus import Corpus, DataConfig, DataError, load_corpus

__all__ = ["Corpus", "DataConfig", "DataError", "load_corpus"]

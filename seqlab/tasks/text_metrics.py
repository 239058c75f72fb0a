"""Diversity and repetition of generated text: repetition rate, type-token ratio, distinct-n
and self-BLEU (for Hyperfitting, Carlsson et al. 2024: greedy long generations of a model
fine-tuned to near-zero loss on a few passages repeat themselves less).

A text is either a string, split on whitespace (word tokens), or a sequence of tokens that is
used as given (tokenizer ids or strings). ``self_bleu`` takes strings and scores them with
sacrebleu's own ``13a`` tokenizer (token sequences are joined with spaces and scored as they
are, ``tokenize="none"``).

Example:
    >>> repetition_rate("the cat sat . the cat sat . the cat sat .")   # 4-grams seen before
    0.5555555555555556
    >>> type_token_ratio("a b a b")
    0.5
    >>> distinct_n(["a b c", "a b d"], n=2)     # {a b, b c, b d} over 4 bigrams
    0.75
    >>> round(self_bleu(["same words here"] * 3), 6)
    100.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

Text = Union[str, Sequence]


def tokens_of(text: Text) -> list:
    """``text``'s tokens: a string split on whitespace, or the sequence itself as a list."""
    return text.split() if isinstance(text, str) else list(text)


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    """The ``len(tokens) - n + 1`` contiguous n-grams of ``tokens`` (none if it is shorter)."""
    if n < 1:
        raise ValueError(f"n={n}; an n-gram needs n >= 1")
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(text: Text, n: int = 4) -> float:
    """Share of ``text``'s n-grams that already occurred earlier in the same text.

    0 for a text without a repeated n-gram (or without any n-gram); approaches 1 for a text
    that loops over one phrase. Counted over positions: the second and every later occurrence
    of an n-gram counts as repeated.
    """
    grams = ngrams(tokens_of(text), n)
    seen, repeated = set(), 0
    for g in grams:
        repeated += g in seen
        seen.add(g)
    return repeated / len(grams) if grams else 0.0


def type_token_ratio(text: Text) -> float:
    """Distinct tokens over tokens of one text (0 for an empty text)."""
    toks = tokens_of(text)
    return len(set(toks)) / len(toks) if toks else 0.0


def distinct_n(texts: Sequence[Text], n: int) -> float:
    """Distinct n-grams over all n-grams of a set of texts (Li et al. 2016), pooled; 0 when
    no text has an n-gram. An n-gram never spans two texts."""
    grams = [g for t in texts for g in ngrams(tokens_of(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[Text], tokenize: str | None = None) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): each text's sentence BLEU (sacrebleu, 0-100,
    its default exponential smoothing) with all the other texts as references, averaged.
    High means the texts resemble each other (100 for identical texts); near 0 for texts that
    share no words.

    Args:
        texts: at least two strings, or token sequences (joined with spaces).
        tokenize: sacrebleu's tokenizer; ``"13a"`` for strings and ``"none"`` for token
            sequences when not given.

    Raises:
        ValueError: fewer than two texts.
    """
    import sacrebleu

    if len(texts) < 2:
        raise ValueError(f"self-BLEU needs at least two texts, got {len(texts)}")
    strings = [t if isinstance(t, str) else " ".join(map(str, t)) for t in texts]
    if tokenize is None:
        tokenize = "13a" if all(isinstance(t, str) for t in texts) else "none"
    bleu = sacrebleu.BLEU(tokenize=tokenize, effective_order=True)
    scores = [bleu.sentence_score(s, strings[:i] + strings[i + 1:]).score
              for i, s in enumerate(strings)]
    return sum(scores) / len(scores)

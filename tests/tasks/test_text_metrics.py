"""Repetition rate, type-token ratio, distinct-n and self-BLEU on hand-checkable texts."""

import pytest

from seqlab.tasks.text_metrics import (distinct_n, ngrams, repetition_rate, self_bleu,
                                       type_token_ratio)

SENTENCE = "the quick brown fox jumps over the lazy dog ."
VARIED = ("a small river runs past the old mill where children once played every summer "
          "before the town grew and the farms gave way to quiet streets of brick houses")


def test_a_looping_text_repeats_and_a_varied_one_does_not():
    looping = " ".join([SENTENCE] * 8)             # 80 words, one 10-word sentence
    # Only the first sentence and the 3 n-grams that cross into the second are new.
    assert repetition_rate(looping) == pytest.approx(1 - 10 / 77)
    assert repetition_rate(VARIED) == 0.0
    assert type_token_ratio(looping) == pytest.approx(9 / 80)   # "the" twice per sentence
    assert type_token_ratio(VARIED) > 0.8


def test_repetition_rate_counts_second_and_later_occurrences():
    assert repetition_rate("a b a b a", n=2) == pytest.approx(2 / 4)   # ab ba [ab] [ba]
    assert repetition_rate("a b a b a", n=1) == pytest.approx(3 / 5)
    assert repetition_rate("too short", n=4) == 0.0


def test_token_sequences_are_used_as_given():
    assert repetition_rate([7, 8, 7, 8, 7], n=2) == repetition_rate("a b a b a", n=2)
    assert type_token_ratio([1, 1, 2]) == pytest.approx(2 / 3)
    assert type_token_ratio("") == 0.0


def test_distinct_n_pools_texts_without_crossing_them():
    assert distinct_n(["x y z", "x y z"], n=2) == pytest.approx(2 / 4)
    assert distinct_n(["x y", "z w"], n=2) == 1.0                # "y z" would span two texts
    assert distinct_n(["x y", "x y", "x y"], n=1) == pytest.approx(2 / 6)
    assert distinct_n(["x"], n=2) == 0.0


def test_ngrams_rejects_n_below_one():
    assert ngrams([1, 2, 3], 2) == [(1, 2), (2, 3)]
    with pytest.raises(ValueError, match="n >= 1"):
        ngrams([1, 2], 0)


def test_self_bleu_identical_disjoint_and_between():
    assert self_bleu([SENTENCE] * 4) == pytest.approx(100.0)
    disjoint = ["alpha beta gamma delta epsilon", "one two three four five",
                "red green blue cyan magenta"]
    assert self_bleu(disjoint) < 1.0
    near = ["the cat sat on the mat today", "the cat sat on the rug today"]
    assert 20.0 < self_bleu(near) < 100.0
    assert self_bleu([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(100.0)   # tokenize="none"
    assert self_bleu([[1, 2, 3, 4], [5, 6, 7, 8]]) < 1.0
    with pytest.raises(ValueError, match="at least two"):
        self_bleu([SENTENCE])

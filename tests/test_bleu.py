"""BLEU: hand-computed corpus BLEU, agreement with sacreBLEU, BPE removal and the detokenized signature."""

from __future__ import annotations

import math
import random

import pytest
from sacrebleu.metrics import BLEU

from experiments.nmt.bleu import bleu_statistics, detok_sacrebleu, remove_bpe, tokenized_bleu


def test_remove_bpe():
    assert remove_bpe("new@@ york is a wonder@@ ful city") == "newyork is a wonderful city"
    assert remove_bpe("ends with a mark@@") == "ends with a mark"  # as fairseq: a final marker joins nothing
    assert remove_bpe("") == ""
    assert remove_bpe("a##b c", marker="##") == "ab c"


def test_corpus_bleu_by_hand():
    hyps = ["the cat sat on the mat", "there is a dog in the garden"]
    refs = ["the cat is on the mat", "there is a dog in the park today"]
    # n-gram matches / hypothesis n-grams, sentence 1 + sentence 2:
    #   1: the(2) cat on mat = 5/6       there is a dog in the = 6/7
    #   2: "the cat" "on the" "the mat" = 3/5;   all but "the garden" = 5/6
    #   3: "on the mat" = 1/4;           all but "in the garden" = 4/5
    #   4: none = 0/3;                   all but "dog in the garden" = 3/4
    stats = bleu_statistics(hyps, refs)
    assert stats["matches"] == [11, 8, 5, 3] and stats["totals"] == [13, 11, 9, 7]
    assert (stats["hyp_len"], stats["ref_len"]) == (13, 14)
    precisions = (11 / 13) * (8 / 11) * (5 / 9) * (3 / 7)
    expected = 100 * math.exp(1 - 14 / 13) * precisions**0.25  # hypothesis shorter: brevity penalty
    assert tokenized_bleu(hyps, refs) == pytest.approx(expected, rel=1e-12)


def test_clipping_zero_matches_and_no_brevity_penalty_when_longer():
    assert bleu_statistics(["the the the"], ["the cat"])["matches"][0] == 1  # clipped to the reference count
    assert tokenized_bleu(["a b c d"], ["e f g h"]) == 0.0
    assert tokenized_bleu(["a b c d e"], ["a b c d"]) == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert tokenized_bleu(["The Cat sat down"], ["the cat sat down"], lowercase=True) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        tokenized_bleu(["a"], ["a", "b"])


def test_agrees_with_sacrebleu_without_tokenization():
    rng = random.Random(0)
    words = "the a cat dog sat ran on in mat park , . is was".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(60)]
    hyps = []
    for ref in refs:  # edit references: drop, substitute and insert words
        out = []
        for w in ref.split():
            r = rng.random()
            out += [] if r < 0.1 else [rng.choice(words)] if r < 0.25 else [w, rng.choice(words)] if r < 0.3 else [w]
        hyps.append(" ".join(out))
    expected = BLEU(tokenize="none").corpus_score(hyps, [refs]).score
    assert tokenized_bleu(hyps, refs) == pytest.approx(expected, rel=1e-9)


def test_detok_sacrebleu_detokenizes_and_returns_the_signature():
    hyps = ["hello , world !", "it &apos;s a test ."]
    refs = ["hello , world !", "it &apos;s the test ."]
    score, signature = detok_sacrebleu(hyps, refs, "en")
    detok_hyps, detok_refs = ["hello, world!", "it's a test."], ["hello, world!", "it's the test."]
    metric = BLEU()
    assert score == pytest.approx(metric.corpus_score(detok_hyps, [detok_refs]).score)
    assert signature == str(metric.get_signature())
    assert "tok:13a" in signature and "version:" in signature

"""BLEU two ways: tokenized corpus BLEU (the paper's metric) and detokenized sacreBLEU with its signature.

Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL 2002; Post, "A Call
for Clarity in Reporting BLEU Scores", WMT 2018 (sacreBLEU). The RAdam paper's 34.66 / 34.76 (Table 2) are
fairseq-generate's ``BLEU4`` on BPE-removed, Moses-tokenized, lower-cased text (``--remove-bpe``; the
IWSLT'14 data is lower-cased at preparation), the same number as Moses' ``multi-bleu.perl``.

Corpus BLEU-4 with one reference per sentence: for n = 1..4, with ``m_n`` the clipped n-gram matches
(each hypothesis n-gram counts at most as often as in its reference) and ``c_n`` the hypothesis n-grams,
summed over the corpus::

    p_n  = m_n / c_n
    BP   = 1 if h > r else exp(1 - r / h)       (h, r: total hypothesis / reference lengths)
    BLEU = 100 * BP * exp((1/4) sum_n log p_n)  (0 if any m_n = 0, as multi-bleu.perl)
"""

from __future__ import annotations

import math
from collections import Counter


def remove_bpe(line: str, marker: str = "@@ ") -> str:
    """Join subword-nmt pieces: ``"new@@ york"`` -> ``"newyork"`` (fairseq's ``--remove-bpe``)."""
    return (line + " ").replace(marker, "").rstrip()


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu_statistics(hyps: list[str], refs: list[str], max_order: int = 4) -> dict[str, list[int] | int]:
    """Corpus sums: matches[n-1], totals[n-1] for n = 1..max_order, hyp_len, ref_len."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references; pass one reference per hypothesis")
    matches, totals, hyp_len, ref_len = [0] * max_order, [0] * max_order, 0, 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_order + 1):
            h_grams, r_grams = _ngrams(h, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, r_grams[g]) for g, c in h_grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    return {"matches": matches, "totals": totals, "hyp_len": hyp_len, "ref_len": ref_len}


def tokenized_bleu(hyps: list[str], refs: list[str], *, lowercase: bool = False) -> float:
    """Corpus BLEU-4 (0-100) on whitespace-tokenized strings, as fairseq ``--scoring bleu`` / multi-bleu.perl."""
    if lowercase:
        hyps, refs = [h.lower() for h in hyps], [r.lower() for r in refs]
    s = bleu_statistics(hyps, refs)
    if s["hyp_len"] == 0 or min(s["matches"]) == 0:
        return 0.0
    log_precision = sum(math.log(m / c) for m, c in zip(s["matches"], s["totals"])) / len(s["matches"])
    brevity = 1.0 if s["hyp_len"] > s["ref_len"] else math.exp(1.0 - s["ref_len"] / s["hyp_len"])
    return 100.0 * brevity * math.exp(log_precision)


def detok_sacrebleu(hyps: list[str], refs: list[str], lang: str) -> tuple[float, str]:
    """(score, signature) of sacreBLEU's default BLEU after Moses-detokenizing hypotheses and references."""
    from sacrebleu.metrics import BLEU
    from sacremoses import MosesDetokenizer

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references; pass one reference per hypothesis")
    detok = MosesDetokenizer(lang=lang)
    hyps = [detok.detokenize(h.split()) for h in hyps]
    refs = [detok.detokenize(r.split()) for r in refs]
    metric = BLEU()
    score = metric.corpus_score(hyps, [refs]).score
    return score, str(metric.get_signature())

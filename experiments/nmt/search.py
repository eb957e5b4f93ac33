"""Batched beam search with length penalty, as fairseq's ``SequenceGenerator`` (beam 5, lenpen 1.0 in the paper).

Wiseman & Rush 2016 / Wu et al. 2016 (GNMT) for the length normalisation; fairseq
``fairseq/sequence_generator.py`` for the exact procedure, which the RAdam paper's evaluation ran
(``--beam 5 --remove-bpe``, Liu et al., ICLR 2020, Sec. 3). Written from the algorithm, not copied.

For each sentence, k = ``beam_size`` prefixes y_{<t} (all starting with eos) with cumulative scores
``s(y_{<t}) = sum_i log p(y_i | y_{<i}, x)``. At step t (0-based):

1. ``log p(. | y_{<t}, x)`` for every live beam; pad is forbidden, unk gets ``-unk_penalty``, eos is forbidden
   while t < ``min_len`` and is the only choice once t >= max_len = int(max_len_a * |x| + max_len_b)
   (|x| counts the source's eos, as fairseq's ``src_lengths``).
2. Candidates = the 2k best (beam, token) extensions by ``s + log p`` (only beam 0 at t = 0: all beams agree).
3. Candidates among the top k that end in eos are *finished*: their hypothesis y (without eos, t + 1 tokens
   with it) gets the score ``s(y) / (t + 1) ** len_penalty``. A sentence is done once it has k finished
   hypotheses (or at t = max_len).
4. The k best candidates that do not end in eos become the new beams.

The result per sentence is its best finished hypothesis by normalised score. One deliberate difference from
fairseq: max_len is computed per sentence (fairseq uses the batch's longest source), so a sentence gets the
same translation whatever it is batched with. Finished sentences leave the batch (with their cache rows), as
in fairseq.

The model must provide ``encode(src_tokens, src_lengths) -> enc`` and ``decode(prefix, enc, cache) -> logits
(n, 1, V)`` for the prefix's last token, with every tensor of ``enc`` and ``cache`` batch-first (see
``experiments/nmt/model.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from experiments.nmt.model import select_batch

Hypothesis = tuple[list[int], float]  # (token ids without eos, normalised score)


@torch.no_grad()
def beam_search_nbest(model, src_tokens: torch.Tensor, src_lengths: torch.Tensor, *, beam_size: int = 5,
                      len_penalty: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10, eos: int = 2,
                      pad: int = 1, unk: int = 3, unk_penalty: float = 0.0,
                      min_len: int = 1) -> list[list[Hypothesis]]:
    """The ``beam_size`` finished hypotheses of every sentence, best first (see the module docstring)."""
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be >= 1")
    was_training = model.training
    model.eval()
    try:
        return _search(model, src_tokens, src_lengths, beam_size, len_penalty, max_len_a, max_len_b, eos, pad,
                       unk, unk_penalty, min_len)
    finally:
        model.train(was_training)


def beam_search(model, src_tokens: torch.Tensor, src_lengths: torch.Tensor, *, beam_size: int = 5,
                len_penalty: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10, eos: int = 2, pad: int = 1,
                unk: int = 3) -> list[list[int]]:
    """The best hypothesis (token ids, no eos) of every sentence of the batch."""
    nbest = beam_search_nbest(model, src_tokens, src_lengths, beam_size=beam_size, len_penalty=len_penalty,
                              max_len_a=max_len_a, max_len_b=max_len_b, eos=eos, pad=pad, unk=unk)
    return [hyps[0][0] for hyps in nbest]


def _max_lengths(model, src_lengths: torch.Tensor, max_len_a: float, max_len_b: int) -> torch.Tensor:
    max_len = (max_len_a * src_lengths.double() + max_len_b).long()  # (B,) int() of fairseq, per sentence
    limit = getattr(model, "max_positions", None)
    if limit is not None:
        max_len = max_len.clamp(max=limit - 1)  # the decoder sees at most max_len + 1 positions
    return max_len.clamp(min=1)


def _search(model, src_tokens, src_lengths, k, len_penalty, max_len_a, max_len_b, eos, pad, unk, unk_penalty,
            min_len) -> list[list[Hypothesis]]:
    B, device = src_tokens.size(0), src_tokens.device
    max_len = _max_lengths(model, src_lengths.to(device), max_len_a, max_len_b)  # (B,)
    enc = model.encode(src_tokens, src_lengths)
    enc = select_batch(enc, torch.arange(B, device=device).repeat_interleave(k))  # rows: sentence-major
    cache: dict[str, torch.Tensor] = {}
    sent = torch.arange(B, device=device)  # original index of each live sentence
    tokens = torch.full((B * k, 1), eos, dtype=torch.long, device=device)  # (n k, t + 1) prefixes
    scores = torch.zeros(B, k, device=device)  # (n, k) cumulative log-probs of the live beams
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for step in range(int(max_len.max()) + 1):
        logits = model.decode(tokens, enc, cache)[:, -1]
        lprobs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (n k, V)
        n, V = sent.numel(), lprobs.size(-1)
        if V < 2 * k:
            raise ValueError(f"beam_size={k} needs a vocabulary of at least {2 * k} types, got {V}")
        lprobs[:, pad] = -math.inf
        lprobs[:, unk] -= unk_penalty
        if step < min_len:
            lprobs[:, eos] = -math.inf
        lprobs = lprobs.view(n, k, V)
        at_max = step >= max_len[sent]  # (n,)
        if at_max.any():
            only_eos = torch.full_like(lprobs[0, 0], -math.inf)
            only_eos[eos] = 0.0
            lprobs[at_max] = lprobs[at_max] + only_eos
        cand = lprobs[:, :1] if step == 0 else lprobs + scores[:, :, None]  # (n, k or 1, V)
        cand_scores, cand_index = cand.reshape(n, -1).topk(2 * k)  # (n, 2k)
        cand_beam, cand_token = cand_index // V, cand_index % V
        is_eos = cand_token.eq(eos) & cand_scores.gt(-math.inf)

        for i, j in is_eos[:, :k].nonzero().tolist():
            hyps = finished[int(sent[i])]
            if len(hyps) < k:
                prefix = tokens[i * k + int(cand_beam[i, j]), 1:].tolist()
                hyps.append((prefix, float(cand_scores[i, j]) / (step + 1) ** len_penalty))
        done = at_max | torch.tensor([len(finished[int(s)]) >= k for s in sent], device=device)
        live = (~done).nonzero().squeeze(1)
        if live.numel() == 0:
            break

        # the k best candidates that do not end in eos (eos ones are pushed behind by a 2k offset)
        rank = is_eos.long() * 2 * k + torch.arange(2 * k, device=device)
        chosen = rank.topk(k, dim=1, largest=False).indices[live]  # (n', k)
        beam = cand_beam[live].gather(1, chosen)
        rows = (live[:, None] * k + beam).reshape(-1)  # (n' k,) rows of the current batch to continue
        tokens = torch.cat([tokens[rows], cand_token[live].gather(1, chosen).reshape(-1, 1)], dim=1)
        scores = cand_scores[live].gather(1, chosen)
        enc, cache, sent = select_batch(enc, rows), select_batch(cache, rows), sent[live]

    return [sorted(hyps, key=lambda h: -h[1]) for hyps in finished]

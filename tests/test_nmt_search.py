"""Beam search (fairseq SequenceGenerator semantics) on a bigram model with known answers and on the Transformer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments.nmt.model import TransformerModel
from experiments.nmt.search import beam_search, beam_search_nbest

PAD, EOS, UNK = 1, 2, 3
V = 12  # 0 bos, 1 pad, 2 eos, 3 unk, 4..11 words


class BigramModel(nn.Module):
    """A decoder whose next-token distribution depends only on the previous token: P[prev] (V, V).

    It implements the model protocol of ``beam_search`` (encode / decode with a batch-first cache). Its cache
    remembers the token each row saw at the previous step, and decode checks it against the prefix, so a
    wrong beam reordering of the cache fails loudly.
    """

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("log_probs", probs.clamp_min(1e-12).log())

    def encode(self, src_tokens, src_lengths):
        return (src_tokens.float(),)

    def decode(self, prefix, enc, cache):
        if "last" in cache:
            assert torch.equal(cache["last"][:, 0], prefix[:, -2]), "cache rows do not follow the beams"
        cache["last"] = prefix[:, -1:].clone()
        return self.log_probs[prefix[:, -1]][:, None, :]  # (n, 1, V)


def bigram(transitions: dict[int, dict[int, float]]) -> BigramModel:
    """Rows given as {next: prob}; the leftover mass is spread evenly over the other word types 4..11."""
    probs = torch.zeros(V, V)
    for prev in range(V):
        row = transitions.get(prev, {EOS: 0.5})
        rest = [w for w in range(4, V) if w not in row]
        probs[prev, list(row)] = torch.tensor(list(row.values()))
        probs[prev, rest] = (1.0 - sum(row.values())) / len(rest)
    return BigramModel(probs)


def one_source(length=5):
    return torch.full((1, length), 4).index_fill_(1, torch.tensor([length - 1]), EOS), torch.tensor([length])


def test_beam_finds_the_better_translation_greedy_misses():
    # greedy: 4 (0.5) then eos (0.3) -> 0.15; beam: 5 (0.4) then eos (0.9) -> 0.36.
    model = bigram({EOS: {4: 0.5, 5: 0.4}, 4: {EOS: 0.3}, 5: {EOS: 0.9}})
    src, lengths = one_source()
    assert beam_search(model, src, lengths, beam_size=1) == [[4]]
    nbest = beam_search_nbest(model, src, lengths, beam_size=2)
    assert nbest[0][0][0] == [5]
    assert nbest[0][0][1] == pytest.approx(math.log(0.4 * 0.9) / 2, rel=1e-6)  # 2 tokens counting eos


def test_length_penalty_trades_total_score_for_length():
    # A = [4]: 0.6 * 0.5, log = -1.204 (2 tokens); B = [5, 6]: 0.3 * 0.9 * 0.9, log = -1.415 (3 tokens).
    model = bigram({EOS: {4: 0.6, 5: 0.3}, 4: {EOS: 0.5}, 5: {6: 0.9}, 6: {EOS: 0.9}})
    src, lengths = one_source()
    log_a, log_b = math.log(0.6 * 0.5), math.log(0.3 * 0.9 * 0.9)
    for len_penalty, best in [(0.0, [4]), (1.0, [5, 6]), (2.0, [5, 6])]:
        nbest = beam_search_nbest(model, src, lengths, beam_size=2, len_penalty=len_penalty)[0]
        scores = {tuple(h): s for h, s in nbest}
        assert nbest[0][0] == best
        assert scores[(4,)] == pytest.approx(log_a / 2**len_penalty, rel=1e-5)
        assert scores[(5, 6)] == pytest.approx(log_b / 3**len_penalty, rel=1e-5)


def test_max_length_respected_per_sentence():
    model = bigram({prev: {EOS: 1e-6} for prev in range(V)})  # eos is (almost) never wanted
    src = torch.full((3, 9), PAD)
    lengths = torch.tensor([9, 3, 6])
    for i, n in enumerate(lengths.tolist()):
        src[i, :n - 1], src[i, n - 1] = 4, EOS
    hyps = beam_search(model, src, lengths, beam_size=3, max_len_a=0.5, max_len_b=2)
    assert [len(h) for h in hyps] == [int(0.5 * n + 2) for n in lengths.tolist()]  # 6, 3, 5
    assert all(EOS not in h and PAD not in h for h in hyps)


def test_pad_never_and_eos_not_first():
    model = bigram({EOS: {EOS: 0.6, PAD: 0.3, 7: 0.05}, 7: {EOS: 0.9}})
    src, lengths = one_source()
    assert beam_search(model, src, lengths, beam_size=1) == [[7]]


# ----------------------------------------------------------------------------------- on the Transformer

def reversal_batch(g: torch.Generator, n: int, vocab: int = 17, max_words: int = 7):
    """Source: 1..max_words random words + eos; target: the words reversed + eos (right-padded)."""
    lengths = torch.randint(1, max_words + 1, (n,), generator=g)
    src, tgt = torch.full((n, max_words + 1), PAD), torch.full((n, max_words + 1), PAD)
    for i, n_words in enumerate(lengths.tolist()):
        words = torch.randint(4, vocab, (n_words,), generator=g)
        src[i, :n_words], src[i, n_words] = words, EOS
        tgt[i, :n_words], tgt[i, n_words] = words.flip(0), EOS
    prev = torch.cat([torch.full((n, 1), EOS), tgt[:, :-1]], dim=1)
    prev[:, 1:][tgt[:, :-1].eq(PAD)] = PAD
    return src, lengths + 1, prev, tgt


@pytest.fixture(scope="module")
def half_trained():
    """A tiny Transformer after 60 Adam steps on word reversal: input-dependent, varied-length, unsure output."""
    torch.manual_seed(0)
    model = TransformerModel(17, 17, PAD, encoder_layers=1, decoder_layers=1, embed_dim=32, ffn_dim=64, heads=4,
                             dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        src, lengths, prev, tgt = reversal_batch(g, 32)
        loss = F.cross_entropy(model(src, lengths, prev).transpose(1, 2), tgt, ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def sources(n, seed):
    src, lengths, _, _ = reversal_batch(torch.Generator().manual_seed(seed), n)
    return src, lengths


def greedy(model, src, lengths, max_len):
    """Reference greedy decoding with full (non-incremental) forward passes, one sentence at a time."""
    out = []
    for i in range(src.size(0)):
        s = src[i:i + 1, :lengths[i]]
        prefix = [EOS]
        for step in range(max_len[i] + 1):
            lprobs = F.log_softmax(model(s, lengths[i:i + 1], torch.tensor([prefix]))[0, -1], -1)
            lprobs[PAD] = -math.inf
            if step == 0:
                lprobs[EOS] = -math.inf
            token = EOS if step == max_len[i] else int(lprobs.argmax())
            if token == EOS:
                break
            prefix.append(token)
        out.append(prefix[1:])
    return out


def test_beam_one_is_greedy(half_trained):
    src, lengths = sources(8, seed=5)
    max_len = [int(1.2 * n + 4) for n in lengths.tolist()]
    hyps = beam_search(half_trained, src, lengths, beam_size=1, max_len_b=4)
    assert hyps == greedy(half_trained, src, lengths, max_len)
    assert len({len(h) for h in hyps}) > 2  # varied lengths: sentences finish at different steps


def test_batch_equals_one_by_one_and_scores_equal_rescoring(half_trained):
    model = half_trained
    src, lengths = sources(6, seed=6)
    batched = beam_search_nbest(model, src, lengths, beam_size=4)
    greedy_hyps = beam_search(model, src, lengths, beam_size=1)
    assert [n[0][0] for n in batched] != greedy_hyps  # beam 4 finds other translations: not vacuous
    for i, n in enumerate(lengths.tolist()):
        alone = beam_search_nbest(model, src[i:i + 1, :n], lengths[i:i + 1], beam_size=4)[0]
        assert [h for h, _ in alone] == [h for h, _ in batched[i]]
        for hyp, score in batched[i]:  # incremental scores (with beam reordering) == a full forward pass
            prev, target = torch.tensor([[EOS] + hyp]), torch.tensor(hyp + [EOS])
            lprobs = F.log_softmax(model(src[i:i + 1, :n], lengths[i:i + 1], prev)[0], -1)
            assert score == pytest.approx(lprobs[torch.arange(len(target)), target].sum().item() / len(target),
                                          abs=1e-4)


def test_training_mode_is_restored(half_trained):
    src, lengths = sources(2, seed=7)
    half_trained.train()
    beam_search(half_trained, src, lengths, beam_size=2)
    assert half_trained.training
    half_trained.eval()

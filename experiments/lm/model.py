"""The paper's One Billion Word language model: a word-level LSTM with an adaptive softmax.

Paper: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (Sec. 5, Fig. 4):
2-layer LSTM, hidden 2048, 300-d word embeddings, dropout 0.1, adaptive softmax with cut-offs
[4000, 40000, 200000]. Original code: github.com/LiyuanLucasLiu/RAdam (language-model/). Adaptive softmax:
Grave et al., "Efficient softmax approximation for GPUs", ICML 2017, as torch.nn.AdaptiveLogSoftmaxWithLoss
(head: the ``cutoffs[0]`` most frequent words + one entry per tail cluster; tail cluster i: a projection to
``hidden / div_value^(i+1)`` then its words). The vocabulary must be sorted by frequency (experiments/lm/data.py).

    x_t = dropout(E w_t)                      E: (V, 300)
    h_t = LSTM_2(LSTM_1(x_t, h_{t-1}))        dropout 0.1 between the layers, (h, c) carried across batches
    log p(w_{t+1} | w_{<=t}) = adaptive_log_softmax(dropout(h_t))

``forward`` returns the summed negative log-likelihood of the targets (nats, fp32 also under autocast) and the
new (h, c). Under CPU autocast the LSTM runs in the autocast dtype only where oneDNN has an LSTM kernel for it
(bf16 needs AVX-512 or AMX: CPUs with AVX2 only have none and raise "could not create a primitive descriptor");
elsewhere it runs in fp32 and the rest of the model stays under autocast (``lstm_autocast_supported``).
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

Hidden = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


@functools.cache
def lstm_autocast_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether an LSTM runs under ``torch.autocast(device_type, dtype)`` here: always on CUDA; on CPU only if
    oneDNN can build the kernel (probed once with a tiny LSTM, as the CPU's instruction set decides)."""
    if device_type != "cpu":
        return True
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            nn.LSTM(2, 2, batch_first=True)(torch.zeros(1, 1, 2))
    except RuntimeError as e:
        log.warning("no %s LSTM kernel on this CPU (%s): the LSTM runs in fp32, the rest under autocast",
                    dtype, str(e).splitlines()[0][:80])
        return False
    return True


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 300, hidden_dim: int = 2048, num_layers: int = 2,
                 dropout: float = 0.1, cutoffs: Sequence[int] = (4000, 40000, 200000), div_value: float = 4.0):
        super().__init__()
        kept = [int(c) for c in cutoffs if 0 < int(c) < vocab_size - 1]
        if len(kept) < len(cutoffs):
            log.warning("adaptive softmax: cut-offs %s dropped (vocabulary of %d words); using %s",
                        [c for c in cutoffs if c not in kept], vocab_size, kept)
        self.cutoffs = kept
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, dropout=dropout if num_layers > 1 else 0.0,
                            batch_first=True)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(hidden_dim, vocab_size, kept, div_value=div_value)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None = None
                ) -> tuple[torch.Tensor, Hidden]:
        """tokens, targets: (B, T) word ids; hidden: (h, c) or None (zeros). -> (summed NLL, (h, c))."""
        x = self.drop(self.embed(tokens))                           # (B, T, E)
        out, hidden = self._lstm(x, hidden)                         # (B, T, H), (h, c): (layers, B, H)
        out = self.drop(out).reshape(-1, out.size(-1))              # (B*T, H)
        with torch.autocast(out.device.type, enabled=False):        # bf16/fp16 runs: softmax and sum in fp32
            log_prob = self.softmax(out.float(), targets.reshape(-1)).output  # (B*T,) log p(target)
        nll = -log_prob.sum()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # a tail cluster without targets in this batch gets no gradient; DDP expects one for every parameter
            nll = nll + 0.0 * sum(p.sum() for p in self.softmax.tail.parameters())
        return nll, hidden

    def _lstm(self, x: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        device = x.device.type
        if not torch.is_autocast_enabled(device) or lstm_autocast_supported(device, torch.get_autocast_dtype(device)):
            return self.lstm(x, hidden)
        with torch.autocast(device, enabled=False):  # no kernel for the autocast dtype: this layer in fp32
            return self.lstm(x.float(), None if hidden is None else tuple(h.float() for h in hidden))

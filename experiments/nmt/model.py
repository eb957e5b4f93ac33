"""Encoder-decoder Transformer equal to fairseq's ``transformer_iwslt_de_en`` (post-LayerNorm by default).

Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (arXiv:1706.03762), as implemented in fairseq
(https://github.com/facebookresearch/fairseq, ``fairseq/models/transformer.py``), the code the RAdam paper
(Liu et al., ICLR 2020, Sec. 3 and Table 2) trained with ``-a transformer_iwslt_de_en``. Written from the
architecture's description, not copied.

Per layer l of the encoder (x: (B, S, d), d = ``embed_dim``), post-LN (``pre_ln=False``, the paper's model)::

    x = LN(x + Dropout(SelfAttn(x)))
    x = LN(x + Dropout(W_2 Dropout_act(ReLU(W_1 x + b_1)) + b_2))

and pre-LN (``pre_ln=True``, fairseq's ``normalize_before``): ``x = x + Dropout(Sublayer(LN(x)))`` with one
extra LayerNorm after the last layer of the encoder and of the decoder. Decoder layers add a cross-attention
sublayer on the encoder output between the causal self-attention and the FFN.

Inputs: ``x_0 = Dropout(sqrt(d) * E[token] + P[pos])`` with E ~ N(0, d^-1) (pad row zero) and P fairseq's
sinusoidal table: for i < d/2, ``P[p, i] = sin(p * w_i)``, ``P[p, d/2 + i] = cos(p * w_i)``,
``w_i = exp(-i * ln(10000) / (d/2 - 1))``; positions start at ``pad_idx + 1`` and pad tokens get a zero
vector. Output: ``logits = h W_out^T`` with W_out the decoder's input embedding when
``share_decoder_input_output_embed`` (or all three tables tied with ``share_all_embeddings``), otherwise a
separate (V_tgt, d) matrix ~ N(0, d^-1) without bias.

Parameter count (no bias on the output projection, LayerNorm has 2d parameters)::

    enc_layer = 4(d^2 + d) + 2d + (d f + f) + (f d + d) + 2d
    dec_layer = 8(d^2 + d) + 3 * 2d + (d f + f) + (f d + d)
    total = V_src d + V_tgt d [+ V_tgt d untied output] + N_enc enc_layer + N_dec dec_layer [+ 2 * 2d pre-LN]

Initialisation as fairseq: xavier-uniform weights with zero biases; q/k/v projections with gain 1/sqrt(2)
(the same distribution as one xavier-uniform (3d, d) in_proj matrix of the paper-era fairseq).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``: an explicit boolean key-padding
mask for encoder self-attention and cross-attention, ``is_causal`` for the decoder's self-attention (no
key-padding mask there: targets are right-padded, so a causal row never sees a pad before its own position).

Incremental decoding (beam search): ``encode`` once, then ``decode(prefix, enc, cache)`` with a dict ``cache``
that holds, per decoder layer, the self-attention keys/values of the prefix and the cross-attention
keys/values; every tensor in ``enc`` and ``cache`` has the batch on dim 0, so beam reordering is one
``index_select`` per tensor (``select_batch``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class EncoderOut(NamedTuple):
    out: torch.Tensor  # (B, S, d)
    keep: torch.Tensor  # (B, S) bool, True where the source token is not padding


Cache = dict[str, torch.Tensor]


def select_batch(tensors, index: torch.Tensor):
    """Rows ``index`` (dim 0) of every tensor in a cache dict or a (named) tuple such as EncoderOut."""
    if isinstance(tensors, dict):
        return {k: v.index_select(0, index) for k, v in tensors.items()}
    selected = [t.index_select(0, index) for t in tensors]
    return type(tensors)(*selected) if hasattr(tensors, "_fields") else type(tensors)(selected)


def sinusoidal_table(num_positions: int, dim: int, pad_idx: int) -> torch.Tensor:
    """fairseq's sinusoidal position table (num_positions, dim); row ``pad_idx`` is zero."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * freq[None, :]  # (P, d/2)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[pad_idx] = 0.0
    return table


def make_positions(tokens: torch.Tensor, pad_idx: int) -> torch.Tensor:
    """Position ids as fairseq: pad_idx + 1, pad_idx + 2, ... over non-pad tokens; pad tokens get pad_idx."""
    keep = tokens.ne(pad_idx).long()
    return torch.cumsum(keep, dim=1) * keep + pad_idx


def _xavier_linear(in_dim: int, out_dim: int, gain: float = 1.0, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _embedding(vocab_size: int, dim: int, pad_idx: int) -> nn.Embedding:
    emb = nn.Embedding(vocab_size, dim, padding_idx=pad_idx)
    nn.init.normal_(emb.weight, mean=0.0, std=dim**-0.5)
    with torch.no_grad():
        emb.weight[pad_idx].zero_()
    return emb


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with biased q/k/v/out projections (fairseq's MultiheadAttention)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim={dim} is not divisible by heads={heads}; pick heads that divide it")
        self.heads, self.dropout = heads, dropout
        gain = 1 / math.sqrt(2)
        self.q_proj = _xavier_linear(dim, dim, gain)
        self.k_proj = _xavier_linear(dim, dim, gain)
        self.v_proj = _xavier_linear(dim, dim, gain)
        self.out_proj = _xavier_linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, H, L, d/H)
        B, L, d = x.shape
        return x.view(B, L, self.heads, d // self.heads).transpose(1, 2)

    def attend(self, q, k, v, mask=None, causal=False) -> torch.Tensor:
        # q: (B, H, T, hd), k/v: (B, H, S, hd), mask: (B, 1, 1, S) bool (True = attend)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        B, H, T, hd = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * hd))


class EncoderLayer(nn.Module):
    def __init__(self, dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, pre_ln):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = _xavier_linear(dim, ffn_dim)
        self.fc2 = _xavier_linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout, self.activation_dropout, self.pre_ln = dropout, activation_dropout, pre_ln

    def residual(self, x, sublayer, norm):
        """Post-LN: LN(x + Dropout(f(x))); pre-LN: x + Dropout(f(LN(x)))."""
        h = sublayer(norm(x) if self.pre_ln else x)
        x = x + F.dropout(h, self.dropout, self.training)
        return x if self.pre_ln else norm(x)

    def ffn(self, x):
        h = F.dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(h)

    def forward(self, x, mask):  # x: (B, S, d), mask: (B, 1, 1, S)
        attn = self.self_attn

        def self_attention(h):
            return attn.attend(attn.split(attn.q_proj(h)), attn.split(attn.k_proj(h)),
                               attn.split(attn.v_proj(h)), mask)

        x = self.residual(x, self_attention, self.self_attn_layer_norm)
        return self.residual(x, self.ffn, self.final_layer_norm)


class DecoderLayer(EncoderLayer):
    def __init__(self, dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, pre_ln):
        super().__init__(dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, pre_ln)
        self.encoder_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)

    def forward(self, x, enc: EncoderOut, enc_mask, cache: Cache | None = None, name: str = ""):
        # x: (B, T, d) (T = 1 when decoding with a cache), enc_mask: (B, 1, 1, S)
        sa, ca = self.self_attn, self.encoder_attn

        def self_attention(h):
            q, k, v = sa.split(sa.q_proj(h)), sa.split(sa.k_proj(h)), sa.split(sa.v_proj(h))
            if cache is None:
                return sa.attend(q, k, v, causal=True)
            if name + "self.k" in cache:  # append this step's key/value to the prefix's
                k = torch.cat([cache[name + "self.k"], k], dim=2)
                v = torch.cat([cache[name + "self.v"], v], dim=2)
            cache[name + "self.k"], cache[name + "self.v"] = k, v
            return sa.attend(q, k, v)  # the single new query may see the whole prefix

        def cross_attention(h):
            if cache is not None and name + "cross.k" in cache:
                k, v = cache[name + "cross.k"], cache[name + "cross.v"]
            else:
                k, v = ca.split(ca.k_proj(enc.out)), ca.split(ca.v_proj(enc.out))
                if cache is not None:
                    cache[name + "cross.k"], cache[name + "cross.v"] = k, v
            return ca.attend(ca.split(ca.q_proj(h)), k, v, enc_mask)

        x = self.residual(x, self_attention, self.self_attn_layer_norm)
        x = self.residual(x, cross_attention, self.encoder_attn_layer_norm)
        return self.residual(x, self.ffn, self.final_layer_norm)


class TransformerModel(nn.Module):
    """fairseq-equivalent encoder-decoder Transformer; see the module docstring for the maths."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, pad_idx: int = 1, *, encoder_layers: int = 6,
                 decoder_layers: int = 6, embed_dim: int = 512, ffn_dim: int = 1024, heads: int = 4,
                 dropout: float = 0.3, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 pre_ln: bool = False, share_decoder_input_output_embed: bool = False,
                 share_all_embeddings: bool = False, max_positions: int = 1024):
        super().__init__()
        if share_all_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"share_all_embeddings needs one joint dictionary, got sizes {src_vocab_size} and "
                             f"{tgt_vocab_size}; build a joined dictionary or set share_all_embeddings=false")
        self.pad_idx, self.dropout, self.max_positions = pad_idx, dropout, max_positions
        self.embed_scale = math.sqrt(embed_dim)
        self.encoder_embed = _embedding(src_vocab_size, embed_dim, pad_idx)
        self.decoder_embed = self.encoder_embed if share_all_embeddings else _embedding(
            tgt_vocab_size, embed_dim, pad_idx)
        # fairseq's table has max_positions + pad_idx + 1 rows; it is a fixed buffer (not a parameter).
        self.register_buffer("positions", sinusoidal_table(max_positions + pad_idx + 1, embed_dim, pad_idx),
                             persistent=False)
        sizes = (embed_dim, ffn_dim, heads, dropout, attention_dropout, activation_dropout, pre_ln)
        self.encoder_layers = nn.ModuleList(EncoderLayer(*sizes) for _ in range(encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(*sizes) for _ in range(decoder_layers))
        self.encoder_norm = nn.LayerNorm(embed_dim) if pre_ln else None
        self.decoder_norm = nn.LayerNorm(embed_dim) if pre_ln else None
        self.output_projection = None
        if not (share_decoder_input_output_embed or share_all_embeddings):
            self.output_projection = nn.Parameter(torch.empty(tgt_vocab_size, embed_dim))
            nn.init.normal_(self.output_projection, mean=0.0, std=embed_dim**-0.5)

    def embed(self, tokens: torch.Tensor, table: nn.Embedding, positions: torch.Tensor, length: int) -> torch.Tensor:
        """``length``: the padded length of the full sequences, which bounds their positions (checked from the
        shape, so the host does not wait for the device)."""
        if length > self.max_positions:
            raise ValueError(f"a sequence of {length} tokens exceeds max_positions={self.max_positions}; filter "
                             f"long sentences or raise max_positions")
        x = self.embed_scale * table(tokens) + self.positions[positions]  # (B, L, d)
        return F.dropout(x, self.dropout, self.training)

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOut:
        """src_tokens: (B, S) right- or left-padded. src_lengths is implied by the padding (kept for the API)."""
        keep = src_tokens.ne(self.pad_idx)  # (B, S)
        x = self.embed(src_tokens, self.encoder_embed, make_positions(src_tokens, self.pad_idx), src_tokens.size(1))
        mask = keep[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return EncoderOut(x, keep)

    def decode(self, prev_output_tokens: torch.Tensor, enc: EncoderOut, cache: Cache | None = None) -> torch.Tensor:
        """Logits (B, T, V) for all T positions, or (B, 1, V) for the last one when ``cache`` is a dict.

        With a cache, ``prev_output_tokens`` is the whole prefix (B, t) (starting with eos, no padding) and
        only its last token is run; the cache must have seen the first t - 1 tokens (an empty dict at t = 1).
        """
        positions, length = make_positions(prev_output_tokens, self.pad_idx), prev_output_tokens.size(1)
        if cache is not None:
            prev_output_tokens, positions = prev_output_tokens[:, -1:], positions[:, -1:]
        x = self.embed(prev_output_tokens, self.decoder_embed, positions, length)
        enc_mask = enc.keep[:, None, None, :]
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, enc, enc_mask, cache, f"{i}.")
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        weight = self.decoder_embed.weight if self.output_projection is None else self.output_projection
        return F.linear(x, weight)  # (B, T, V)

    def forward(self, src_tokens, src_lengths, prev_output_tokens) -> torch.Tensor:
        return self.decode(prev_output_tokens, self.encode(src_tokens, src_lengths))


def fairseq_param_count(src_vocab_size: int, tgt_vocab_size: int, *, encoder_layers=6, decoder_layers=6,
                        embed_dim=512, ffn_dim=1024, pre_ln=False, share_decoder_input_output_embed=False,
                        share_all_embeddings=False) -> int:
    """fairseq's "num. model params" for a transformer with these sizes, from the architecture formula."""
    d, f = embed_dim, ffn_dim
    attention, norm, ffn = 4 * (d * d + d), 2 * d, d * f + f + f * d + d
    count = encoder_layers * (attention + ffn + 2 * norm) + decoder_layers * (2 * attention + ffn + 3 * norm)
    count += src_vocab_size * d + (0 if share_all_embeddings else tgt_vocab_size * d)
    if not (share_decoder_input_output_embed or share_all_embeddings):
        count += tgt_vocab_size * d
    return count + (2 * norm if pre_ln else 0)

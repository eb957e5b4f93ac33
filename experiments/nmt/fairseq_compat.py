"""fairseq ``TransformerModel`` weights <-> ``experiments.nmt.model.TransformerModel``, both ways.

The two models compute the same function (tests/equivalence/ checks logits, loss, gradients and training
steps against fairseq's own code); only the parameter names differ. fairseq 0.12 names -> ours::

    encoder.embed_tokens.weight                  encoder_embed.weight
    decoder.embed_tokens.weight                  decoder_embed.weight
    {en,de}coder.layers.N.<sublayer>.<p>         {en,de}coder_layers.N.<sublayer>.<p>   (same sublayer names)
    {en,de}coder.layer_norm.<p>   (pre-LN)       {en,de}coder_norm.<p>
    decoder.output_projection.weight (untied)    output_projection
    decoder.embed_out             (fairseq < 0.10, untied)

Older checkpoints (the paper's time, fairseq 0.6-0.9) are read as fairseq itself upgrades them: the stacked
``self_attn.in_proj_weight`` (3d, d) / ``in_proj_bias`` (3d,) rows are q, k, v in that order, and encoder
layers' ``layer_norms.0`` / ``layer_norms.1`` are ``self_attn_layer_norm`` / ``final_layer_norm``.
Dropped: ``*.version`` and ``embed_positions._float_tensor`` (bookkeeping buffers; the sinusoidal table is
recomputed) and, with tied embeddings, ``decoder.output_projection.weight`` (a second name of the decoder's
embedding). Anything else (learned positions, layernorm_embedding, adaptive softmax, ...) is an architecture
this model does not have: a one-line error names the key.

Loading a checkpoint file: ``load_fairseq_checkpoint(path)`` reads it with ``weights_only=True`` (files are
untrusted); fairseq 0.12's checkpoints load as they are, see its docstring for files that hold other objects.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Mapping

import torch

from experiments.nmt.model import TransformerModel

_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"(^|\.)version$|embed_positions\._float_tensor$")
_LAYER_NORMS = {"layer_norms.0": "self_attn_layer_norm", "layer_norms.1": "final_layer_norm"}


def _split_in_proj(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """``...in_proj_weight`` (3d, d) or ``...in_proj_bias`` (3d,) -> q/k/v projections (rows q, k, v)."""
    prefix, kind = key.rsplit(".in_proj_", 1)
    q, k, v = value.chunk(3, dim=0)
    return {f"{prefix}.{name}_proj.{kind}": part for name, part in zip("qkv", (q, k, v))}


def _layer_key(side: str, index: str, rest: str) -> str:
    for old, new in _LAYER_NORMS.items():
        if side == "encoder" and rest.startswith(old + "."):
            rest = new + rest[len(old):]
    return f"{side}_layers.{index}.{rest}"


def from_fairseq_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fairseq TransformerModel state dict (``checkpoint["model"]``) as ours (load with ``strict=True``)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        flat.update(_split_in_proj(key, value) if ".in_proj_" in key else {key: value})
    tied = "decoder.output_projection.weight" in flat and torch.equal(
        flat["decoder.output_projection.weight"], flat.get("decoder.embed_tokens.weight", torch.empty(0)))
    ours: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if _IGNORED.search(key) or (tied and key == "decoder.output_projection.weight"):
            continue
        if match := _LAYER.match(key):
            ours[_layer_key(*match.groups())] = value
        elif key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            ours[key.replace(".embed_tokens", "_embed")] = value
        elif key.startswith(("encoder.layer_norm.", "decoder.layer_norm.")):
            ours[key.replace(".layer_norm", "_norm")] = value
        elif key in ("decoder.output_projection.weight", "decoder.embed_out"):
            ours["output_projection"] = value
        else:
            raise ValueError(f"fairseq parameter {key!r} has no counterpart in experiments.nmt.model."
                             "TransformerModel (a different architecture); convert only transformer models "
                             "with sinusoidal positions and no embedding LayerNorm")
    return ours


def to_fairseq_state_dict(model: TransformerModel) -> dict[str, torch.Tensor]:
    """Our model's weights under fairseq 0.12's names (tensors shared, not copied); load into a fairseq
    TransformerModel of the same architecture with ``strict=False`` (its ``version`` / ``_float_tensor``
    buffers are not weights)."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        side, _, rest = key.partition("_")
        if key.startswith(("encoder_layers.", "decoder_layers.")):
            out[f"{side}.layers.{rest.split('.', 1)[1]}"] = value
        elif key.startswith(("encoder_embed.", "decoder_embed.")):
            out[f"{side}.embed_tokens.weight"] = value
        elif key.startswith(("encoder_norm.", "decoder_norm.")):
            out[f"{side}.layer_norm.{rest.split('.', 1)[1]}"] = value
        elif key == "output_projection":
            out["decoder.output_projection.weight"] = value
    if "output_projection" not in state:  # tied: fairseq's output projection is the decoder embedding
        out["decoder.output_projection.weight"] = out["decoder.embed_tokens.weight"]
    return out


def model_kwargs_from_fairseq(cfg: Mapping | argparse.Namespace) -> dict:
    """``TransformerModel`` keyword arguments (sizes, dropout, LN placement, tying) from a fairseq model config:
    ``checkpoint["cfg"]["model"]`` (fairseq >= 0.10) or the ``args`` Namespace of older checkpoints."""
    get = (lambda k, d=None: getattr(cfg, k, d)) if isinstance(cfg, argparse.Namespace) else cfg.get
    enc_dim, dec_dim = get("encoder_embed_dim"), get("decoder_embed_dim", get("encoder_embed_dim"))
    if enc_dim != dec_dim or get("decoder_output_dim", dec_dim) != dec_dim:
        raise ValueError(f"encoder_embed_dim={enc_dim}, decoder_embed_dim={dec_dim}, decoder_output_dim="
                         f"{get('decoder_output_dim')}: this model needs one width for all three")
    if get("encoder_normalize_before", False) != get("decoder_normalize_before", False):
        raise ValueError("encoder_normalize_before and decoder_normalize_before differ; this model has one "
                         "pre_ln switch for both")
    unsupported = {"encoder_learned_pos": False, "decoder_learned_pos": False, "layernorm_embedding": False,
                   "no_scale_embedding": False, "no_token_positional_embeddings": False,
                   "adaptive_softmax_cutoff": None, "cross_self_attention": False}
    for key, plain in unsupported.items():
        if get(key, plain) not in (plain, False, None):
            raise ValueError(f"fairseq model option {key}={get(key)!r} is not supported by this model "
                             "(sinusoidal positions, scaled embeddings, no embedding LayerNorm, full softmax)")
    if (get("activation_fn", "relu") or "relu") != "relu":
        raise ValueError(f"activation_fn={get('activation_fn')!r}: this model's FFN uses relu only")
    for pair in (("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
                 ("encoder_attention_heads", "decoder_attention_heads")):
        if get(pair[0]) != get(pair[1], get(pair[0])):
            raise ValueError(f"{pair[0]}={get(pair[0])} but {pair[1]}={get(pair[1])}; this model uses one value")
    return {"encoder_layers": get("encoder_layers"), "decoder_layers": get("decoder_layers"),
            "embed_dim": enc_dim, "ffn_dim": get("encoder_ffn_embed_dim"), "heads": get("encoder_attention_heads"),
            "dropout": get("dropout", 0.1), "attention_dropout": get("attention_dropout", 0.0),
            "activation_dropout": get("activation_dropout", get("relu_dropout", 0.0)) or 0.0,
            "pre_ln": bool(get("encoder_normalize_before", False)),
            "share_decoder_input_output_embed": bool(get("share_decoder_input_output_embed", False)),
            "share_all_embeddings": bool(get("share_all_embeddings", False)),
            "max_positions": min(get("max_source_positions", 1024), get("max_target_positions", 1024))}


def load_fairseq_checkpoint(path: str | Path) -> TransformerModel:
    """A fairseq transformer checkpoint as our model (eval mode), read with ``torch.load(weights_only=True)``.

    Accepted: pickles of tensors, containers and ``argparse.Namespace`` (fairseq's ``args`` / ``cfg.model``),
    which is what fairseq 0.12's checkpoints hold (fairseq-train's ``checkpoint_last.pt`` loads as it is:
    tests/test_fairseq_plugin.py). A file holding other objects is refused; if you trust it, strip it once in
    a fairseq environment: ``c = torch.load(path, weights_only=False)``, then ``torch.save({"model":
    c["model"], "args": c["args"] or c["cfg"]["model"]}, "small.pt")``.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- the unpickler's refusal of a non-allowed global
        raise ValueError(f"{path}: not loadable with weights_only=True ({str(e).splitlines()[0][:120]}); strip "
                         "it to {'model', 'args'} as load_fairseq_checkpoint's docstring shows") from None
    cfg = (checkpoint.get("cfg") or {}).get("model") or checkpoint.get("args")
    if cfg is None or "model" not in checkpoint:
        raise ValueError(f"{path}: no 'model' weights with a 'cfg'/'args' model config; is it a fairseq checkpoint?")
    state = from_fairseq_state_dict(checkpoint["model"])
    src_vocab, tgt_vocab = state["encoder_embed.weight"].size(0), state["decoder_embed.weight"].size(0)
    model = TransformerModel(src_vocab, tgt_vocab, pad_idx=1, **model_kwargs_from_fairseq(cfg))
    model.load_state_dict(state, strict=True)
    return model.eval()

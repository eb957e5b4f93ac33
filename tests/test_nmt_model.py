"""The NMT Transformer (fairseq transformer_iwslt_de_en semantics), the label-smoothed loss and averaging."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.nmt.average import average_checkpoints
from experiments.nmt.loss import label_smoothed_cross_entropy
from experiments.nmt.model import (TransformerModel, fairseq_param_count, make_positions, select_batch,
                                   sinusoidal_table)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
PAD, EOS = 1, 2
TINY = dict(encoder_layers=2, decoder_layers=2, embed_dim=16, ffn_dim=24, heads=4, dropout=0.0)


def tiny_model(seed=0, src_vocab=29, tgt_vocab=23, **overrides) -> TransformerModel:
    torch.manual_seed(seed)
    return TransformerModel(src_vocab, tgt_vocab, PAD, **{**TINY, **overrides}).eval()


def random_batch(seed=0, lengths=(7, 4, 5), tgt_len=6, src_vocab=29, tgt_vocab=23):
    """Right-padded src (each row ending in eos) and prev_output_tokens starting with eos."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD)
    for i, n in enumerate(lengths):
        src[i, :n - 1] = torch.randint(4, src_vocab, (n - 1,), generator=g)
        src[i, n - 1] = EOS
    prev = torch.randint(4, tgt_vocab, (len(lengths), tgt_len), generator=g)
    prev[:, 0] = EOS
    return src, torch.tensor(lengths), prev


# ----------------------------------------------------------------------------------------------- sizes

def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_iwslt_parameter_count_matches_fairseq_architecture():
    # Standard fairseq IWSLT'14 de-en dictionaries: [de] 8848 types, [en] 6632 types. Layer sizes by hand:
    # attention 4 (512^2 + 512) = 1,050,624; FFN 512*1024 + 1024 + 1024*512 + 512 = 1,049,088 + 1,536;
    # encoder layer = 1,050,624 + 1,050,112 + 2 * 1,024 = 2,102,784;
    # decoder layer = 2 * 1,050,624 + 1,050,112 + 3 * 1,024 = 3,154,432.
    # No published fairseq "num. model params" line for this setting was found with the search tool, so
    # the reference is this architecture arithmetic (fairseq builds exactly these modules).
    layers = 6 * 2_102_784 + 6 * 3_154_432
    tied = 8848 * 512 + 6632 * 512 + layers
    with torch.device("meta"):
        untied_model = TransformerModel(8848, 6632, share_decoder_input_output_embed=False)
        tied_model = TransformerModel(8848, 6632, share_decoder_input_output_embed=True)
    assert count(tied_model) == tied == 39_469_056
    assert count(tied_model) == fairseq_param_count(8848, 6632, share_decoder_input_output_embed=True)
    # transformer_iwslt_de_en leaves the output projection untied (fairseq's default), as the paper's runs did
    assert count(untied_model) == tied + 6632 * 512 == 42_864_640 == fairseq_param_count(8848, 6632)


@pytest.mark.parametrize("name, vocab", [("transformer_iwslt", (8848, 6632)), ("transformer_wmt", (32768, 32768)),
                                         ("transformer_cpu", (8848, 6632))])
@pytest.mark.parametrize("pre_ln", [False, True])
def test_configs_instantiate_with_the_fairseq_parameter_count(name, vocab, pre_ln):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.pre_ln = pre_ln
    with torch.device("meta"):
        model = instantiate(cfg)(src_vocab_size=vocab[0], tgt_vocab_size=vocab[1], pad_idx=PAD)
    sizes = {k: cfg[k] for k in ("encoder_layers", "decoder_layers", "embed_dim", "ffn_dim", "pre_ln",
                                 "share_decoder_input_output_embed", "share_all_embeddings")}
    assert count(model) == fairseq_param_count(*vocab, **sizes)
    assert (model.encoder_norm is not None) == pre_ln


def test_paper_config_is_transformer_iwslt_de_en():
    cfg = OmegaConf.load(CONFIGS / "transformer_iwslt.yaml")
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.embed_dim, cfg.ffn_dim, cfg.heads) == (6, 6, 512, 1024, 4)
    assert (cfg.dropout, cfg.pre_ln, cfg._partial_) == (0.3, False, True)


def test_share_all_embeddings_ties_three_tables_and_needs_one_vocabulary():
    model = tiny_model(src_vocab=31, tgt_vocab=31, share_all_embeddings=True)
    assert model.encoder_embed is model.decoder_embed and model.output_projection is None
    with pytest.raises(ValueError, match="joint dictionary"):
        tiny_model(src_vocab=31, tgt_vocab=30, share_all_embeddings=True)


# ---------------------------------------------------------------------------------- inputs and init

def test_sinusoidal_table_by_hand():
    # dim 4: frequencies w = (1, 10000^-1); row p = (sin p, sin p/1e4, cos p, cos p/1e4); pad row 1 is zero.
    table = sinusoidal_table(5, 4, pad_idx=1)
    p = 2.0
    expected = torch.tensor([math.sin(p), math.sin(p * 1e-4), math.cos(p), math.cos(p * 1e-4)])
    torch.testing.assert_close(table[2], expected)
    assert table[1].abs().sum() == 0


def test_positions_start_after_pad_and_skip_padding():
    tokens = torch.tensor([[5, 6, 2, 1, 1], [1, 1, 7, 8, 2]])  # right- and left-padded rows
    assert make_positions(tokens, 1).tolist() == [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4]]


def test_fairseq_initialisation():
    torch.manual_seed(0)
    d = 64
    model = TransformerModel(500, 400, PAD, embed_dim=d, ffn_dim=128, heads=4, encoder_layers=1, decoder_layers=1)
    emb = model.encoder_embed.weight
    assert emb[PAD].abs().sum() == 0
    assert emb[2:].std().item() == pytest.approx(d**-0.5, rel=0.05)
    attn = model.encoder_layers[0].self_attn
    bound_qkv = math.sqrt(6 / (2 * d)) / math.sqrt(2)  # xavier-uniform with gain 1/sqrt(2)
    assert attn.q_proj.weight.abs().max() <= bound_qkv and attn.q_proj.weight.abs().max() > 0.95 * bound_qkv
    assert attn.out_proj.weight.abs().max() > bound_qkv  # gain 1 on the output projection
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(b.abs().sum() == 0 for b in biases)


# --------------------------------------------------------------------------------------- the network

def test_encoder_layer_equals_post_ln_formula_with_torch_attention():
    torch.manual_seed(1)
    model = tiny_model(seed=1)
    layer = model.encoder_layers[0]
    x = torch.randn(2, 5, 16)
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    a = layer.self_attn
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        reference.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        reference.out_proj.load_state_dict(a.out_proj.state_dict())
    h = layer.self_attn_layer_norm(x + reference(x, x, x, key_padding_mask=~keep, need_weights=False)[0])
    expected = layer.final_layer_norm(h + layer.fc2(F.relu(layer.fc1(h))))
    torch.testing.assert_close(layer(x, keep[:, None, None, :]), expected, atol=1e-5, rtol=1e-5)


def test_forward_shape_and_padding_independence():
    model = tiny_model()
    src, lengths, prev = random_batch()
    logits = model(src, lengths, prev)
    assert logits.shape == (3, 6, 23)
    alone = model(src[1:2, :4], lengths[1:2], prev[1:2])
    torch.testing.assert_close(logits[1:2], alone, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = tiny_model()
    src, lengths, prev = random_batch()
    changed = prev.clone()
    changed[:, 4] = 5
    a, b = model(src, lengths, prev), model(src, lengths, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("pre_ln", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_incremental_decoding_equals_full_forward(pre_ln, tied):
    model = tiny_model(pre_ln=pre_ln, share_decoder_input_output_embed=tied)
    src, lengths, prev = random_batch(seed=3)
    full = model(src, lengths, prev)
    enc, cache = model.encode(src, lengths), {}
    steps = [model.decode(prev[:, :t + 1], enc, cache) for t in range(prev.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_incremental_cache_follows_reordering():
    model = tiny_model()
    src, lengths, prev = random_batch(seed=4)
    enc, cache = model.encode(src, lengths), {}
    for t in range(3):
        model.decode(prev[:, :t + 1], enc, cache)
    order = torch.tensor([2, 0, 0])
    enc, cache, prev = select_batch(enc, order), select_batch(cache, order), prev[order]
    step = model.decode(prev[:, :4], enc, cache)
    torch.testing.assert_close(step[:, 0], model(src[order], lengths[order], prev[:, :4])[:, 3], atol=1e-5,
                               rtol=1e-5)


def test_dropout_only_in_training_and_too_long_input_is_an_error():
    model = tiny_model(dropout=0.5)
    src, lengths, prev = random_batch()
    torch.testing.assert_close(model(src, lengths, prev), model(src, lengths, prev))
    model.train()
    assert not torch.allclose(model(src, lengths, prev), model(src, lengths, prev))
    short = tiny_model(max_positions=5)
    with pytest.raises(ValueError, match="max_positions=5"):
        short(src, lengths, prev)


# ---------------------------------------------------------------------------------------------- loss

def test_label_smoothed_loss_equals_torch_cross_entropy_with_smoothing():
    # The paper-era fairseq formula (1 - eps) nll + eps/V sum_v -log p(v) is torch's label_smoothing.
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    target = torch.randint(3, 11, (3, 5))
    target[0, 3:] = PAD
    target[2, 1:] = PAD
    loss, nll = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=PAD)
    flat, flat_t = logits.view(-1, 11), target.view(-1)
    torch.testing.assert_close(loss, F.cross_entropy(flat, flat_t, ignore_index=PAD, label_smoothing=0.1,
                                                     reduction="sum"))
    torch.testing.assert_close(nll, F.cross_entropy(flat, flat_t, ignore_index=PAD, reduction="sum"))
    loss.backward()
    assert logits.grad[2, 1:].abs().sum() == 0  # pad positions get no gradient


def test_label_smoothed_loss_by_hand_and_in_fp32():
    # Two non-pad tokens, V = 4, logits favouring the gold token: p(gold) = e / (e + 3).
    logits = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [5.0, 0, 0, 0]]]).half()
    target = torch.tensor([[0, 2, PAD]])
    loss, nll = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=PAD)
    log_z = math.log(math.e + 3)
    nll_tok, smooth_tok = log_z - 1, 4 * log_z - 1
    assert loss.dtype == torch.float32
    assert nll.item() == pytest.approx(2 * nll_tok, rel=1e-6)
    assert loss.item() == pytest.approx(2 * (0.9 * nll_tok + 0.1 / 4 * smooth_tok), rel=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        label_smoothed_cross_entropy(logits, target[:, :2], 0.1)


# ----------------------------------------------------------------------------------------- averaging

def test_average_checkpoints_equals_manual_mean(tmp_path):
    states = []
    for seed in range(3):
        state = tiny_model(seed=seed).state_dict()
        state["half"] = torch.randn(4, generator=torch.Generator().manual_seed(seed)).half()
        state["steps"] = torch.tensor(7)
        states.append(state)
        torch.save({"model": state, "epoch": seed}, tmp_path / f"checkpoint{seed}.pt")
    averaged = average_checkpoints([tmp_path / f"checkpoint{i}.pt" for i in range(3)])
    assert averaged.keys() == states[0].keys()
    for key, value in averaged.items():
        if key == "steps":
            assert value.item() == 7
            continue
        manual = (states[0][key].double() + states[1][key].double() + states[2][key].double()) / 3
        assert value.dtype == states[0][key].dtype
        torch.testing.assert_close(value, manual.to(value.dtype))
    model = tiny_model()
    model.load_state_dict({k: v for k, v in averaged.items() if k not in ("half", "steps")})


def test_average_checkpoints_rejects_bad_input(tmp_path):
    torch.save({"weights": {}}, tmp_path / "a.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "b.pt")
    torch.save({"model": {"v": torch.zeros(2)}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="no 'model' entry"):
        average_checkpoints([tmp_path / "a.pt"])
    with pytest.raises(ValueError, match="other parameters"):
        average_checkpoints([tmp_path / "b.pt", tmp_path / "c.pt"])
    with pytest.raises(FileNotFoundError):
        average_checkpoints([tmp_path / "missing.pt"])
    with pytest.raises(ValueError, match="no checkpoint"):
        average_checkpoints([])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_attention_kernels_match_cpu_and_incremental_decoding():
    model = tiny_model(seed=5)
    src, lengths, prev = random_batch(seed=5)
    expected = model(src, lengths, prev)
    model.cuda()
    src, lengths, prev = src.cuda(), lengths.cuda(), prev.cuda()
    full = model(src, lengths, prev)
    enc, cache = model.encode(src, lengths), {}
    steps = torch.cat([model.decode(prev[:, :t + 1], enc, cache) for t in range(prev.size(1))], dim=1)
    torch.testing.assert_close(full.cpu(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(steps, full, atol=1e-4, rtol=1e-4)

"""fairseq's own objects for the equivalence tests: its model, criterion, Trainer and batches, built from the
same command-line flags as ``fairseq-train``, next to ours built from the same sizes and weights.

Importing this module skips the importing test module where fairseq does not import (it is optional).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

try:  # fairseq 0.12.2 fails on Python >= 3.11 with errors other than ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fairseq  # noqa: F401
        from fairseq import options, tasks
        from fairseq.data import LanguagePairDataset
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
except Exception as e:  # noqa: BLE001
    pytest.skip(f"fairseq does not import here ({type(e).__name__}: {str(e)[:80]}); it is optional: run "
                "`make fairseq-check` (docs/fairseq.md)", allow_module_level=True)

from experiments.nmt.fairseq_compat import from_fairseq_state_dict
from experiments.nmt.model import TransformerModel

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "integrations" / "fairseq_radam"
# transformer_iwslt_de_en at small sizes: 2+2 layers, d 64, 4 heads, FFN 128 (the paper's: 6+6, 512, 4, 1024).
SIZES = {"encoder_layers": 2, "decoder_layers": 2, "embed_dim": 64, "ffn_dim": 128, "heads": 4}
SMALL = ["-a", "transformer_iwslt_de_en", "--encoder-layers", "2", "--decoder-layers", "2",
         "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
         "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
PRE_LN = ["--encoder-normalize-before", "--decoder-normalize-before"]
SHARE = ["--share-decoder-input-output-embed"]
EPS = 0.1  # the paper's label smoothing

torch.set_num_threads(1)  # the machine is shared; these are small models
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def fairseq_cfg(data_dir: Path, *flags: str):
    """fairseq-train's config for these flags (translation de -> en on the prepared Ding folder)."""
    parser = options.get_training_parser()
    argv = [str(data_dir), "-s", "de", "-t", "en", "--user-dir", str(PLUGIN), *SMALL, "--cpu", "--dropout", "0",
            *flags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


class Pair:
    """A fairseq TransformerModel (its task, criterion, cfg) and ours holding the same weights, float64."""

    def __init__(self, ding_task, *flags: str, seed: int = 1, dtype=torch.float64):
        self.cfg = fairseq_cfg(ding_task.data_dir, *paper_label_smoothing(ding_task), *flags)
        torch.manual_seed(seed)
        self.task = tasks.setup_task(self.cfg.task)
        self.fs = self.task.build_model(self.cfg.model).to(dtype)
        self.criterion = self.task.build_criterion(self.cfg.criterion)
        self.ours = ours_like(self.fs, ding_task, self.cfg.model).to(dtype)
        self.ours.load_state_dict(from_fairseq_state_dict(self.fs.state_dict()), strict=True)
        self.src_dict, self.tgt_dict = self.task.source_dictionary, self.task.target_dictionary

    def eval(self):
        self.fs.eval(), self.ours.eval()
        return self


def paper_label_smoothing(ding_task, eps: float = EPS) -> list[str]:
    """fairseq's criterion flags that compute our (the paper-era) label smoothing eps.

    Paper-era fairseq and ours: (1 - eps) nll + eps/V smooth; fairseq >= 0.10 spreads eps over V - 1 types,
    (1 - eps' - eps'/(V-1)) nll + eps'/(V-1) smooth, which is the same formula for eps' = eps (V - 1) / V.
    A later ``--label-smoothing`` flag overrides it."""
    V = len(ding_task.tgt_dict)
    return ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", repr(eps * (V - 1) / V)]


def ours_like(fs_model, ding_task, model_cfg) -> TransformerModel:
    """Our model with the architecture of fairseq's (weights still its own init)."""
    share = bool(getattr(model_cfg, "share_decoder_input_output_embed", False))
    return TransformerModel(len(ding_task.src_dict), len(ding_task.tgt_dict), 1, **SIZES, dropout=0.0,
                            pre_ln=bool(model_cfg.encoder_normalize_before), share_decoder_input_output_embed=share)


def language_pair_dataset(ding_task, split: str, fs_task) -> LanguagePairDataset:
    """fairseq's LanguagePairDataset over our binarized split, with ``fs_task``'s dictionaries (the same token
    ids; fairseq's defaults: left-padded sources, right-padded targets)."""
    data = ding_task.split(split)
    return LanguagePairDataset(data.src, data.src.lengths.numpy(), fs_task.source_dictionary, data.tgt,
                               data.tgt.lengths.numpy(), fs_task.target_dictionary, left_pad_source=True,
                               left_pad_target=False)


def fairseq_sample(dataset: LanguagePairDataset, indices) -> dict:
    """fairseq's collated sample of these pairs (its collater sorts them by source length, longest first)."""
    return dataset.collater([dataset[int(i)] for i in indices])


def ding_batches(ding_task, count: int, epoch: int = 1) -> list[np.ndarray]:
    """The first ``count`` training batches (index arrays) of our harness for this epoch."""
    return list(ding_task.train_batches(epoch).index_batches[:count])


@pytest.fixture
def float64_attention(monkeypatch):
    """fairseq in float64 without its float32 casts (see ``lift_float32_casts``)."""
    lift_float32_casts(monkeypatch)


def lift_float32_casts(monkeypatch) -> None:
    """fairseq takes its attention softmax and its output log-softmax in float32 whatever the input dtype
    (``utils.softmax`` / ``utils.log_softmax``, for fp16 stability); ours stay in the input dtype (at least
    float32), and its gradient clipping takes norms in float32 (which fails on float64 gradients). For a
    float64 comparison, let fairseq's keep the dtype (the only change: no cast); unpatched, the two differ by
    float32 rounding (docs/fairseq.md)."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))
    monkeypatch.setattr(fairseq.utils, "log_softmax",
                        lambda x, dim, onnx_trace=False: torch.log_softmax(x, dim=dim))
    monkeypatch.setattr(fairseq.utils, "clip_grad_norm_", _clip_grad_norm_in_dtype)


def _clip_grad_norm_in_dtype(params, max_norm, aggregate_norm_fn=None) -> torch.Tensor:
    """fairseq.utils.clip_grad_norm_ (0.12, CPU, no experts) with the norms in the gradients' dtype instead of
    float32 (its torch.norm(..., dtype=torch.float32) refuses float64 input)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    total_norm = torch.norm(torch.stack([torch.norm(g, p=2) for g in grads]))
    if aggregate_norm_fn is not None:
        total_norm = aggregate_norm_fn(total_norm)
    if max_norm > 0:
        clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
        torch._foreach_mul_(grads, clip_coef)
    return total_norm


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())

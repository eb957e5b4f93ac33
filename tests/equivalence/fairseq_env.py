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
LOSS = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]

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
        self.cfg = fairseq_cfg(ding_task.data_dir, *LOSS, *flags)
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


def ours_like(fs_model, ding_task, model_cfg) -> TransformerModel:
    """Our model with the architecture of fairseq's (weights still its own init)."""
    share = bool(getattr(model_cfg, "share_decoder_input_output_embed", False))
    return TransformerModel(len(ding_task.src_dict), len(ding_task.tgt_dict), 1, **SIZES, dropout=0.0,
                            pre_ln=bool(model_cfg.encoder_normalize_before), share_decoder_input_output_embed=share)


def language_pair_dataset(ding_task, split: str, pair: Pair) -> LanguagePairDataset:
    """fairseq's LanguagePairDataset over our binarized split (the same token ids; fairseq's defaults:
    left-padded sources, right-padded targets)."""
    data = ding_task.split(split)
    return LanguagePairDataset(data.src, data.src.lengths.numpy(), pair.src_dict, data.tgt,
                               data.tgt.lengths.numpy(), pair.tgt_dict, left_pad_source=True,
                               left_pad_target=False)


def fairseq_sample(dataset: LanguagePairDataset, indices) -> dict:
    """fairseq's collated sample of these pairs (its collater sorts them by source length, longest first)."""
    return dataset.collater([dataset[int(i)] for i in indices])


def ding_batches(ding_task, count: int, epoch: int = 1) -> list[np.ndarray]:
    """The first ``count`` training batches (index arrays) of our harness for this epoch."""
    return list(ding_task.train_batches(epoch).index_batches[:count])


@pytest.fixture
def float64_attention(monkeypatch):
    """fairseq's MultiheadAttention takes its softmax in float32 whatever the input dtype (``utils.softmax``,
    for fp16 stability); ours stays in the input dtype. For a float64 comparison, let fairseq's keep the
    dtype too (its only change: no cast); unpatched, the two differ by float32 rounding (docs/fairseq.md)."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())

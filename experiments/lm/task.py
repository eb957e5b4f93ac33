"""The language-modelling task: One Billion Word, the offline English Ding corpus, or any corpus in the
One Billion Word layout (experiments/task.py contract).

The RAdam paper's language-modelling setting (Liu et al., ICLR 2020, Sec. 5, Fig. 4; original code:
github.com/LiyuanLucasLiu/RAdam, language-model/): a 2-layer LSTM with an adaptive softmax
(experiments/lm/model.py) on One Billion Word (Chelba et al., 2013), words seen <= 3 times -> ``<unk>``,
batch 128, truncated BPTT 20 with the LSTM state carried across batches, clip 5, 14 epochs, lr 1e-3 x0.1 at the
start of epoch 10, Adam vs RAdam. Launch::

    python run.py task=ding_lm model=lstm_lm_cpu                      # offline CPU default (English Ding)
    python run.py -m experiment=lm_1bw                               # One Billion Word, Adam and RAdam, Fig. 4
    python run.py task=lm1b model=lstm_lm task.archive=/data/1-billion-word-language-modeling-benchmark-r13output.tar.gz
    python run.py task=lm1b model=lstm_lm task.data_dir=/data/my_corpus   # a folder in the 1BW layout

Data (experiments/lm/data.py, batching.py): ``prepare`` finds or builds the text in the 1BW layout under
``data_dir`` (``task.data_dir`` holding the layout; lm1b: extracted from ``archive`` / downloaded from ``url``,
sha256 checked when ``sha256`` is set, else computed and recorded in <data_dir>/prepared/manifest.json; ding:
written from ``ding_file``), then the vocabulary and one token file per shard in <data_dir>/prepared.
Per batch (``loss``): the summed NLL of the targets (nats); ``sample_size`` = number of target words (``</s>``
included), so the loop's gradient is the per-word mean. Reported (``metrics``): ``loss`` (nats/word) and
``ppl = exp(loss)``. ``evaluate("valid")`` scores the valid file (held-out shard 00001 for 1BW) and, with
``test_every_epoch``, also the test file (``test_loss``, ``test_ppl``: the per-epoch test perplexity of
Fig. 4); ``finalize`` scores the test file (held-out shard 00000) with the final model.

The LSTM state carried between training batches lives here (``_hidden``); ``state_dict`` /
``load_state_dict`` put it into the loop's checkpoints (gathered over DDP ranks), so a resumed run continues
exactly. ``updates_per_epoch`` (the lr milestone is in epochs) must match the prepared corpus: ``prepare``
checks it and names the value to set.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Iterator, Mapping

import hydra
import numpy as np
import torch
from torch import nn

from experiments.corpora import files
from experiments.lm import batching, data
from experiments.lm.ding import write_ding_layout
from experiments.task import Batch, DataError, UserError

log = logging.getLogger(__name__)

CORPORA = ("lm1b", "ding")


class LMTask:
    def __init__(
        self, *, corpus: str = "lm1b", data_root: str = "data", data_dir: str | None = None,
        archive: str | None = None, url: str | None = data.DEFAULT_URL, sha256: str | None = None,
        ding_file: str | None = None, train_shards: int = 4, valid_file: str | None = None,
        test_file: str | None = None, unk_max_count: int = 3, batch_size: int = 128, bptt: int = 20,
        eval_batch_size: int = 128, update_freq: int = 1, updates_per_epoch: int | None = None,
        test_every_epoch: bool = True, seed: int = 1,
    ):
        if corpus not in CORPORA:
            raise UserError(f"task.corpus={corpus!r} is not one of {CORPORA}; pick one (or set task.data_dir)")
        if min(batch_size, bptt, eval_batch_size, update_freq) < 1:
            raise UserError("task.batch_size, task.bptt, task.eval_batch_size and trainer.update_freq must be >= 1")
        self.corpus = corpus
        self.data_dir = Path(data_dir or Path(data_root) / {"lm1b": "lm1b", "ding": "ding_lm"}[corpus])
        self.data_dir = self.data_dir.expanduser().resolve()
        self.archive, self.url, self.sha256 = archive, url, sha256
        self.ding_file, self.train_shards = ding_file, train_shards
        self.valid_file, self.test_file, self.unk_max_count = valid_file, test_file, unk_max_count
        self.batch_size, self.bptt, self.eval_batch_size = batch_size, bptt, eval_batch_size
        self.update_freq, self.updates_per_epoch = update_freq, updates_per_epoch
        self.test_every_epoch, self.seed = test_every_epoch, seed
        self.vocab: dict[str, int] = {}
        self.shards: list[Path] = []
        self._eval_tokens: dict[str, np.ndarray] = {}
        self._hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # carried LSTM state, (layers, B/W, H)
        self._restored: tuple[torch.Tensor, torch.Tensor] | None = None  # all ranks' state from a checkpoint
        self._rank, self._world_size = 0, 1

    # ---- data -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        root = self._text_root()
        layout = data.find_layout(root, self.valid_file, self.test_file)
        out = self.data_dir / "prepared"
        stats = data.prepare(layout, out, self.unk_max_count)
        self.vocab = data.load_vocab(out / "vocab.txt")
        self.shards = [data.shard_file(out, p) for p in layout.train]
        self._eval_tokens = {split: np.load(out / f"{split}.npy") for split in ("valid", "test")}
        self._check_epoch_size(stats["shard_tokens"])

    def _text_root(self) -> Path:
        if data.has_layout(self.data_dir):
            return self.data_dir
        if self.corpus == "ding":
            return self._ding_root()
        root = self.data_dir / data.ARCHIVE_TOP
        with files.prepare_lock(self.data_dir):
            manifest = files.Manifest(self.data_dir)
            recorded = manifest.stages.get("archive", {}).get("stats", {}).get("sha256")
            pinned = not self.sha256 or recorded == self.sha256.lower()  # a newly pinned checksum is checked
            if not (data.has_layout(root) and manifest.done("archive", "extracted") and pinned):
                archive = data.fetch_archive(self.data_dir, self.archive, self.url)
                sha256 = files.verify_checksum(archive, self.sha256, move_aside=not self.archive)
                data.extract_layout(archive, self.data_dir)
                manifest.record("archive", "extracted", stats={"archive": str(archive), "sha256": sha256})
        return root

    def _ding_root(self) -> Path:
        """<data_dir>/text: the English Ding sentences in the 1BW layout, rewritten when its inputs change."""
        if not self.ding_file or not Path(self.ding_file).is_file():
            raise DataError(f"the Ding dictionary {self.ding_file} is missing; install the Debian package "
                            f"trans-de-en or set task.ding_file=de-en.txt.gz (ftp.tu-chemnitz.de/pub/Local/urz/ding)")
        root = self.data_dir / "text"
        key = files.options_hash(files.file_sha256(Path(self.ding_file)), self.train_shards)
        with files.prepare_lock(self.data_dir):
            manifest = files.Manifest(self.data_dir)
            if not (data.has_layout(root) and manifest.done("ding_text", key)):
                shutil.rmtree(root, ignore_errors=True)
                counts = write_ding_layout(Path(self.ding_file), root, self.train_shards)
                manifest.record("ding_text", key, stats=counts)
        return root

    def _check_epoch_size(self, shard_tokens: list[int]) -> None:
        batches = sum(batching.batches_per_shard(n, self.batch_size, self.bptt) for n in shard_tokens)
        if batches == 0:
            raise DataError(f"the training text ({sum(shard_tokens)} tokens in {len(shard_tokens)} files) is too "
                            f"small for task.batch_size={self.batch_size}; add text or lower task.batch_size")
        updates = batching.updates_per_epoch(shard_tokens, self.batch_size, self.bptt, self.update_freq)
        if self.updates_per_epoch != updates:
            raise UserError(f"task.updates_per_epoch={self.updates_per_epoch} but {self.data_dir} gives {updates} "
                            f"updates per epoch (batch {self.batch_size}, bptt {self.bptt}, update_freq "
                            f"{self.update_freq}); set task.updates_per_epoch={updates}")

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        if not self.shards:
            raise RuntimeError("call task.prepare() before using the data")
        if self.batch_size % world_size:
            raise UserError(f"task.batch_size={self.batch_size} is not divisible by {world_size} processes; "
                            f"use a multiple of {world_size}")
        self._rank, self._world_size = rank, world_size
        return batching.train_batches(self.shards, self.batch_size, self.bptt, self.seed, epoch, rank, world_size)

    # ---- model and loss ---------------------------------------------------------------------------------------
    def build_model(self, model_cfg: Mapping) -> nn.Module:
        if not self.vocab:
            raise RuntimeError("call task.prepare() before build_model()")
        factory = hydra.utils.instantiate(model_cfg)
        try:
            return factory(vocab_size=len(self.vocab))
        except TypeError as e:
            raise UserError(f"model={model_cfg.get('_target_')} does not fit a language-modelling task ({e}); "
                            f"use model=lstm_lm (paper) or model=lstm_lm_cpu") from e

    def _carried_state(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._restored is not None:  # resumed: this rank's rows of the checkpointed state
            block = self.batch_size // self._world_size
            self._hidden = tuple(h[:, self._rank * block:(self._rank + 1) * block] for h in self._restored)
            self._restored = None
        rows = batch["input"].size(0)
        if bool(batch["reset"]) or self._hidden is None or self._hidden[0].size(1) != rows:
            return None
        return tuple(h.to(batch["input"].device) for h in self._hidden)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        nll, hidden = model(batch["input"], batch["target"], self._carried_state(batch))
        self._hidden = tuple(h.detach() for h in hidden)  # truncated BPTT: no gradient into the previous batch
        return nll, {"loss": nll.detach(), "sample_size": float(batch["target"].numel())}

    def uniform_loss(self) -> float:
        """ln V: the per-word loss of a uniform prediction over the vocabulary (trainer.diverge_loss_above=auto)."""
        return math.log(len(self.vocab))

    def metrics(self, stats: Mapping[str, float]) -> dict[str, float]:
        loss = float(stats.get("loss", 0.0)) / max(float(stats.get("sample_size", 0.0)), 1.0)
        return {"loss": loss, "ppl": math.exp(min(loss, 100.0))}

    # ---- the carried state in checkpoints (experiments/loop.py calls these on every rank) --------------------
    def state_dict(self) -> dict:
        hidden = self._hidden if self._restored is None else None
        if hidden is None:
            return {"hidden": self._restored}
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self._world_size > 1:
            hidden = tuple(_gather_rows(h) for h in hidden)
        return {"hidden": tuple(h.cpu() for h in hidden)}

    def load_state_dict(self, state: Mapping) -> None:
        self._restored, self._hidden = state.get("hidden"), None

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, model: nn.Module, split: str) -> dict[str, float]:
        device = next(model.parameters()).device
        total, count, hidden = 0.0, 0, None
        for batch in batching.eval_batches(self._eval_tokens[split], self.vocab[data.EOS], self.eval_batch_size,
                                           self.bptt):
            if bool(batch["reset"]):
                hidden = None
            nll, hidden = model(batch["input"].to(device), batch["target"].to(device), hidden)
            total += float(nll)
            count += batch["target"].numel()
        return self.metrics({"loss": total, "sample_size": count})

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            result = self._score(model, split)
            if split == "valid" and self.test_every_epoch:
                result.update({f"test_{k}": v for k, v in self._score(model, "test").items()})
        finally:
            model.train(was_training)
        return result

    def finalize(self, model: nn.Module, epoch_checkpoints: list[Path]) -> dict[str, float]:
        return {f"test_{k}": v for k, v in self.evaluate(model, "test").items()}


def _gather_rows(h: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows of ``h`` (layers, B/W, H) in rank order -> (layers, B, H)."""
    parts = [torch.empty_like(h) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, h.contiguous())
    return torch.cat(parts, dim=1)

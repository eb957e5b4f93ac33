"""The NMT task: IWSLT'14 De-En / En-De, the offline Ding corpus, or any raw parallel corpus (experiments/task.py).

The RAdam paper's translation setting (Liu et al., ICLR 2020, Sec. 3 and 5; original code: fairseq 0.6 with
``--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4000``, evaluated with
``scripts/average_checkpoints.py --num-epoch-checkpoints 10`` and ``generate.py --beam 5 --lenpen 1.0
--remove-bpe``). Launch::

    python run.py                                         # Ding corpus, small CPU Transformer
    python run.py task=iwslt optimizer=radam model=transformer_iwslt trainer.device=cuda
    python run.py task=iwslt task.src=en task.tgt=de      # En-De from the same prepared files
    python run.py task.raw_dir=/path/corpus task.src=fr task.tgt=en   # {train,valid,test}.{fr,en}

Per batch (``loss``): label-smoothed cross-entropy summed over non-pad target tokens;
``sample_size`` = number of target tokens (eos included), so the loop's gradient is the per-token mean.
Reported (``metrics``): ``loss`` (label-smoothed, nats/token), ``nll_loss`` (nats/token),
``ppl = exp(nll_loss)``, and ``loss_base2`` (= loss / ln 2, the scale of fairseq's logs and the paper's Fig. 1).
End of training (``finalize``): average the last ``num_avg_checkpoints`` epoch checkpoints into the model,
test loss/ppl, beam search on test, BLEU on BPE-removed tokenized text (``bleu``, the paper's Table 2 metric)
and detokenized sacreBLEU (``sacrebleu`` + ``sacrebleu_signature``).

Options (configs/task/{ding,iwslt}.yaml): ``corpus`` ding | iwslt (a set ``raw_dir`` means a raw corpus);
``data_dir`` (default ``<data_root>/{ding,iwslt14,raw-<dir>-<hash>}``, ``data_root`` = $RADAM_DATA or ./data);
text steps ``max_len``/``ratio`` (clean-corpus-n), ``lowercase`` (ding, raw; IWSLT always lower-cases);
``bpe_merges``, ``joined_dictionary``; IWSLT ``archive``/``urls``/``sha256``/``drop_tags``; Ding ``ding_file``/
``urls``/``sha256`` (of the dictionary's text); batching ``max_tokens`` (padding included; training pairs
longer than that are skipped) and ``seed``; evaluation ``valid_subset``/``test_subset`` (first N pairs, or
null for all), ``num_avg_checkpoints``, ``beam``, ``lenpen``, ``max_len_a``/``max_len_b``, ``search_batch_size``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import hydra
import numpy as np
import torch
from torch import nn

from experiments.nmt import iwslt
from experiments.nmt.average import average_checkpoints
from experiments.nmt.batching import Batches, collate, shard, token_batches
from experiments.nmt.bleu import detok_sacrebleu, remove_bpe, tokenized_bleu
from experiments.nmt.data import ParallelSplit, RawTextCorpus, load_split, prepare_corpus
from experiments.nmt.dictionary import EOS, PAD, UNK, Dictionary
from experiments.nmt.ding import DEFAULT_FILE, DingCorpus
from experiments.nmt.loss import label_smoothed_cross_entropy
from experiments.nmt.search import beam_search
from experiments.task import Batch, UserError, accumulate, to_device

log = logging.getLogger(__name__)

CORPORA = ("ding", "iwslt", "raw")


class NMTTask:
    def __init__(
        self, *, corpus: str = "ding", data_dir: str | None = None, data_root: str = "data", src: str = "de",
        tgt: str = "en", raw_dir: str | None = None, bpe_merges: int = 6000, joined_dictionary: bool = False,
        max_tokens: int = 4096, label_smoothing: float = 0.1, num_avg_checkpoints: int = 10, beam: int = 5,
        lenpen: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10, search_batch_size: int = 128,
        valid_subset: int | None = None, test_subset: int | None = None, seed: int = 1,
        lowercase: bool = True, max_len: int = 175, ratio: float = 1.5,
        archive: str | None = None, urls: Sequence[str] | None = None, sha256: str | None = None,
        drop_tags: Sequence[str] = iwslt.DROP_TAGS, ding_file: str | None = DEFAULT_FILE,
    ):
        if raw_dir:
            corpus = "raw"
        if corpus not in CORPORA:
            raise UserError(f"task.corpus={corpus!r} is not one of {CORPORA}; pick one (or set task.raw_dir)")
        if src == tgt:
            raise UserError(f"task.src and task.tgt are both {src!r}; set two different languages")
        if max_tokens < 8:
            raise UserError(f"task.max_tokens={max_tokens} is too small; use e.g. 4096")
        self.corpus_name, self.src, self.tgt = corpus, src, tgt
        self.data_dir = Path(data_dir) if data_dir else Path(data_root) / self._default_subdir(corpus, raw_dir)
        self.data_dir = self.data_dir.expanduser().resolve()
        self.corpus = self._make_corpus(corpus, raw_dir, lowercase=lowercase, max_len=max_len, ratio=ratio,
                                        archive=archive, urls=urls, sha256=sha256, drop_tags=drop_tags,
                                        ding_file=ding_file)
        if {src, tgt} != set(self.corpus.langs):
            raise UserError(f"task.src={src} task.tgt={tgt} do not match the {corpus} corpus languages "
                            f"{self.corpus.langs}; use those (either direction)")
        self.bpe_merges, self.joined_dictionary = bpe_merges, joined_dictionary
        self.max_tokens, self.label_smoothing, self.seed = max_tokens, label_smoothing, seed
        self.num_avg_checkpoints, self.beam, self.lenpen = num_avg_checkpoints, beam, lenpen
        self.max_len_a, self.max_len_b, self.search_batch_size = max_len_a, max_len_b, search_batch_size
        for name, value in (("valid_subset", valid_subset), ("test_subset", test_subset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"task.{name}={value!r} selects no sentences; use a number >= 1, or null for all")
        self.subset = {"valid": valid_subset, "test": test_subset}
        self._splits: dict[str, ParallelSplit] = {}
        self._train_keep: np.ndarray | None = None
        self.src_dict: Dictionary | None = None
        self.tgt_dict: Dictionary | None = None

    @staticmethod
    def _default_subdir(corpus: str, raw_dir: str | None) -> str:
        if corpus != "raw":
            return {"ding": "ding", "iwslt": "iwslt14"}[corpus]
        raw = Path(raw_dir).expanduser().resolve()
        return f"raw-{raw.name}-{hashlib.sha256(str(raw).encode()).hexdigest()[:8]}"

    def _make_corpus(self, corpus, raw_dir, *, lowercase, max_len, ratio, archive, urls, sha256, drop_tags,
                     ding_file):
        if corpus == "raw":
            return RawTextCorpus(Path(raw_dir).expanduser(), (self.src, self.tgt), lowercase=lowercase,
                                 max_len=max_len, ratio=ratio)
        if corpus == "iwslt":
            return iwslt.IwsltCorpus(self.data_dir, archive=archive, sha256=sha256, drop_tags=drop_tags,
                                     urls=iwslt.DEFAULT_URLS if urls is None else urls, max_len=max_len,
                                     ratio=ratio)
        kwargs = {} if urls is None else {"urls": urls}
        return DingCorpus(self.data_dir, ding_file=ding_file, max_len=max_len, ratio=ratio, lowercase=lowercase,
                          sha256=sha256, **kwargs)

    # ---- data -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        prepare_corpus(self.data_dir, self.corpus, self.bpe_merges, self.joined_dictionary)
        self.src_dict = Dictionary.load(self.data_dir / f"dict.{self.src}.txt")
        self.tgt_dict = Dictionary.load(self.data_dir / f"dict.{self.tgt}.txt")
        self._splits, self._train_keep = {}, None

    def split(self, name: str) -> ParallelSplit:
        if self.src_dict is None:
            raise RuntimeError("call task.prepare() before using the data")
        if name not in self._splits:
            self._splits[name] = load_split(self.data_dir, name, self.src, self.tgt)
        return self._splits[name]

    def _train_indices(self) -> np.ndarray:
        data = self.split("train")
        sizes = torch.maximum(data.src.lengths, data.tgt.lengths).numpy()
        keep = np.flatnonzero(sizes <= self.max_tokens)
        if len(keep) < len(sizes):
            log.warning("skipping %d training pairs longer than task.max_tokens=%d", len(sizes) - len(keep),
                        self.max_tokens)
        return keep

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Batches:
        data = self.split("train")
        if self._train_keep is None:
            self._train_keep = self._train_indices()
        keep = self._train_keep
        local = token_batches(data.src.lengths.numpy()[keep], data.tgt.lengths.numpy()[keep], self.max_tokens,
                              seed=self.seed, epoch=epoch, shuffle=True)
        return Batches(data, shard([keep[b] for b in local], rank, world_size))

    def eval_indices(self, split: str) -> np.ndarray:
        n = len(self.split(split))
        limit = self.subset.get(split)
        return np.arange(n if limit is None else min(n, int(limit)))

    # ---- model and loss ---------------------------------------------------------------------------------------
    def build_model(self, model_cfg: Mapping) -> nn.Module:
        if self.src_dict is None:
            raise RuntimeError("call task.prepare() before build_model()")
        if model_cfg.get("share_all_embeddings") and not self.joined_dictionary:
            raise UserError("model.share_all_embeddings=true needs one dictionary for both languages; "
                            "set task.joined_dictionary=true (or model.share_all_embeddings=false)")
        factory = hydra.utils.instantiate(model_cfg)
        return factory(src_vocab_size=len(self.src_dict), tgt_vocab_size=len(self.tgt_dict), pad_idx=PAD)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = model(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])  # (B, T, V)
        loss_sum, nll_sum = label_smoothed_cross_entropy(logits, batch["target"], self.label_smoothing,
                                                         ignore_index=PAD)
        ntokens = batch["target"].ne(PAD).sum()
        stats = {"loss": loss_sum.detach(), "nll_loss": nll_sum.detach(), "ntokens": ntokens,
                 "nsentences": float(batch["target"].size(0)), "sample_size": ntokens}
        return loss_sum, stats

    def uniform_loss(self) -> float:
        """ln V: the per-token loss of a uniform prediction over the target dictionary (the divergence bound of
        trainer.diverge_loss_above=auto is a multiple of it)."""
        return math.log(len(self.tgt_dict))

    def metrics(self, stats: Mapping[str, float]) -> dict[str, float]:
        tokens = max(float(stats.get("sample_size", 0.0)), 1.0)
        loss = float(stats.get("loss", 0.0)) / tokens
        nll = float(stats.get("nll_loss", 0.0)) / max(float(stats.get("ntokens", tokens)), 1.0)
        return {"loss": loss, "nll_loss": nll, "ppl": math.exp(min(nll, 100.0)), "loss_base2": loss / math.log(2)}

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        data, idx = self.split(split), self.eval_indices(split)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        totals: dict[str, torch.Tensor] = {}
        try:
            for b in token_batches(data.src.lengths.numpy()[idx], data.tgt.lengths.numpy()[idx], self.max_tokens,
                                   shuffle=False):
                batch = to_device(collate(data, idx[b]), device)
                _, stats = self.loss(model, batch)
                accumulate(totals, stats, device)
        finally:
            model.train(was_training)
        return self.metrics(totals)

    @torch.no_grad()
    def translate(self, model: nn.Module, split: str = "test") -> tuple[list[str], list[str]]:
        """Beam-search hypotheses and references (BPE removed, tokenized, lower-cased), in corpus order."""
        data, idx = self.split(split), self.eval_indices(split)
        device = next(model.parameters()).device
        order = idx[np.argsort(data.src.lengths.numpy()[idx], kind="stable")]
        hyps: dict[int, str] = {}
        for start in range(0, len(order), self.search_batch_size):
            chunk = order[start:start + self.search_batch_size]
            batch = collate(data, chunk)
            best = beam_search(model, batch["src_tokens"].to(device), batch["src_lengths"].to(device),
                               beam_size=self.beam, len_penalty=self.lenpen, max_len_a=self.max_len_a,
                               max_len_b=self.max_len_b, eos=EOS, pad=PAD, unk=UNK)
            for i, ids in zip(chunk, best):
                hyps[int(i)] = remove_bpe(self.tgt_dict.string(ids))
        refs = [remove_bpe(self.tgt_dict.string(data.tgt[int(i)], escape_unk=True)) for i in idx]
        return [hyps[int(i)] for i in idx], refs

    def finalize(self, model: nn.Module, epoch_checkpoints: list[Path]) -> dict[str, float]:
        averaged = list(epoch_checkpoints)[-self.num_avg_checkpoints:] if self.num_avg_checkpoints > 0 else []
        if averaged:
            model.load_state_dict(average_checkpoints(averaged))
            log.info("averaged %d epoch checkpoints: %s", len(averaged), ", ".join(p.name for p in averaged))
        result = {f"test_{k}": v for k, v in self.evaluate(model, "test").items()}
        hyps, refs = self.translate(model, "test")
        score, signature = detok_sacrebleu(hyps, refs, self.tgt)
        result.update(bleu=tokenized_bleu(hyps, refs), sacrebleu=score, sacrebleu_signature=signature,
                      averaged_checkpoints=len(averaged), test_sentences=len(hyps))
        for h, r in list(zip(hyps, refs))[:3]:
            log.info("example | hyp: %s | ref: %s", h, r)
        return result

"""NMTTask end to end on small real-format corpora with the real (tiny) Transformer: config -> prepare -> batches
-> loss -> evaluate -> finalize (checkpoint averaging, beam search, BLEU)."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from experiments.nmt.dictionary import PAD
from experiments.nmt.task import NMTTask
from experiments.task import UserError
from tests.nmt_fixtures import write_iwslt_archive, write_raw_corpus

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"encoder_layers": 1, "decoder_layers": 1, "embed_dim": 32, "ffn_dim": 64, "heads": 2,
              "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model_cfg(**overrides):
    cfg = OmegaConf.load(ROOT / "configs/model/transformer_cpu.yaml")
    return OmegaConf.merge(cfg, TINY_MODEL, overrides)


def compose_task(name: str, seed: int = 7, **overrides):
    cfg = OmegaConf.create({"seed": seed, "task": OmegaConf.load(ROOT / f"configs/task/{name}.yaml")})
    cfg.task = OmegaConf.merge(cfg.task, overrides)
    return hydra.utils.instantiate(cfg.task)


@pytest.fixture(scope="module")
def iwslt_task(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("task")
    archive = write_iwslt_archive(root / "dl")
    task = compose_task("iwslt", archive=str(archive), urls=[], data_dir=str(root / "data"), bpe_merges=60,
                        max_tokens=256, num_avg_checkpoints=2, test_subset=15, search_batch_size=8)
    task.prepare()
    return task


def test_config_builds_the_task_with_the_harness_seed(iwslt_task):
    assert isinstance(iwslt_task, NMTTask) and iwslt_task.seed == 7
    assert iwslt_task.corpus_name == "iwslt" and iwslt_task.max_tokens == 256
    assert len(iwslt_task.src_dict) % 8 == 0 and len(iwslt_task.tgt_dict) % 8 == 0


def test_train_batches_loss_and_metrics(iwslt_task):
    batches = iwslt_task.train_batches(epoch=1)
    assert len(batches) > 1
    again = iwslt_task.train_batches(epoch=1)
    assert all(torch.equal(a["id"], b["id"]) for a, b in zip(batches, again))
    ids = torch.cat([b["id"] for b in batches]).sort().values
    assert torch.equal(ids, torch.arange(len(iwslt_task.split("train"))))
    halves = [torch.cat([b["id"] for b in iwslt_task.train_batches(1, r, 2)]) for r in range(2)]
    assert not set(halves[0].tolist()) & set(halves[1].tolist())

    model = iwslt_task.build_model(tiny_model_cfg())
    batch = batches[0]
    assert batch["src_tokens"].numel() <= 256 and batch["target"].numel() <= 256
    loss_sum, stats = iwslt_task.loss(model, batch)
    assert all(not torch.is_tensor(v) or (v.dim() == 0 and not v.requires_grad) for v in stats.values())
    stats = {k: float(v) for k, v in stats.items()}  # device statistics stay tensors (no host sync)
    assert stats["sample_size"] == stats["ntokens"] == float(batch["target"].ne(PAD).sum())
    assert loss_sum.requires_grad and math.isclose(stats["loss"], loss_sum.item(), rel_tol=1e-6)
    m = iwslt_task.metrics(stats)
    assert math.isclose(m["ppl"], math.exp(stats["nll_loss"] / stats["ntokens"]), rel_tol=1e-9)
    assert math.isclose(m["loss_base2"], m["loss"] / math.log(2))
    vocab = len(iwslt_task.tgt_dict)
    assert 0.5 * math.log(vocab) < m["nll_loss"] < 2 * math.log(vocab)  # untrained: about uniform


def test_training_lowers_valid_loss_then_finalize_averages_and_scores(iwslt_task, tmp_path):
    torch.manual_seed(0)
    model = iwslt_task.build_model(tiny_model_cfg())
    before = iwslt_task.evaluate(model, "valid")
    assert set(before) == {"loss", "nll_loss", "ppl", "loss_base2"} and model.training
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    checkpoints = []
    for epoch in (1, 2):
        for batch in iwslt_task.train_batches(epoch):
            loss_sum, stats = iwslt_task.loss(model, batch)
            opt.zero_grad()
            (loss_sum / stats["sample_size"]).backward()
            opt.step()
        checkpoints.append(tmp_path / f"epoch{epoch}.pt")
        torch.save({"model": model.state_dict()}, checkpoints[-1])
    after = iwslt_task.evaluate(model, "valid")
    assert after["loss"] < before["loss"] - 0.5

    states = [torch.load(p)["model"] for p in checkpoints]
    result = iwslt_task.finalize(model, [tmp_path / "missing_old.pt", *checkpoints])  # last 2 are averaged
    name = "decoder.layers.0.ffn1.weight" if "decoder.layers.0.ffn1.weight" in states[0] else next(iter(states[0]))
    assert torch.allclose(model.state_dict()[name], (states[0][name] + states[1][name]) / 2, atol=1e-6)
    assert result["averaged_checkpoints"] == 2 and result["test_sentences"] == 15
    assert 0.0 <= result["bleu"] <= 100.0 and 0.0 <= result["sacrebleu"] <= 100.0
    assert result["sacrebleu_signature"].startswith("nrefs:1")
    assert {"test_loss", "test_ppl"} <= set(result)
    hyps, refs = iwslt_task.translate(model, "test")
    test_tok = (iwslt_task.data_dir / "tok/test.en").read_text(encoding="utf-8").splitlines()
    # references: BPE removed, tokenized, lower-cased, in corpus order; a symbol unseen in training (";" of
    # "&apos;") is written "<<unk>>" as fairseq does, so it can never match a hypothesis
    assert refs[0] == "it &apos<<unk>> s the &quot; house &quot; &a<<unk>> p; the garden ."
    assert refs[1:] == test_tok[1:15]
    assert len(hyps) == 15 and all("@@" not in h for h in hyps)


def test_raw_corpus_through_the_default_config_either_direction(tmp_path, monkeypatch):
    raw = write_raw_corpus(tmp_path / "corpus", "fr", "en")
    monkeypatch.setenv("RADAM_DATA", str(tmp_path / "data"))
    task = compose_task("ding", raw_dir=str(raw), src="en", tgt="fr", bpe_merges=30)
    assert task.corpus_name == "raw" and task.data_dir.parent == tmp_path / "data"
    assert task.data_dir.name.startswith("raw-corpus-")
    task.prepare()
    assert len(task.split("test")) == 12
    batch = task.train_batches(1)[0]
    en_line = task.src_dict.string(batch["src_tokens"][0])
    assert en_line.replace("@@ ", "").split()[0] in {w.lower() for w in (raw / "train.en").read_text().split()}
    model = task.build_model(tiny_model_cfg())
    assert model(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"]).shape[-1] == \
        len(task.tgt_dict)


def test_bad_options_are_refused_with_one_line(tmp_path, iwslt_task):
    with pytest.raises(UserError, match="task.src and task.tgt"):
        NMTTask(data_dir=str(tmp_path), src="de", tgt="de")
    with pytest.raises(UserError, match="do not match"):
        NMTTask(data_dir=str(tmp_path), src="fr", tgt="en")
    with pytest.raises(UserError, match="task.corpus"):
        NMTTask(corpus="wmt", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="joined_dictionary"):
        iwslt_task.build_model(tiny_model_cfg(share_all_embeddings=True))

"""CIFAR-10 files (real format, checksums, corrupt and foreign files), augmentation, batching, models and the
epoch schedules of the vision tasks. The CIFAR-10 files are tiny ones written in the real pickle format
(tests/vision_fixtures.py) and read through the same reader, with MD5 verification explicitly disabled."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from experiments.task import DataError, UserError
from experiments.vision import augment, cifar
from experiments.vision.resnet import resnet_cifar
from experiments.vision.schedule import WarmupMultiStep
from experiments.vision.task import Cifar10Task, ImageNetTask
from radam.schedules import MultiStep
from tests.vision_fixtures import write_cifar10, write_imagenet


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cifar_dir(tmp_path):
    return write_cifar10(tmp_path / "cifar")  # 5 x 64 training, 200 test images


def make_task(root, **kwargs) -> Cifar10Task:
    options = dict(data_dir=str(root), download=False, verify=False, updates_per_epoch=3)
    return Cifar10Task(**{**options, **kwargs})


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ---- files -----------------------------------------------------------------------------------------------------
def test_reader_returns_the_written_images_and_labels(cifar_dir):
    folder = cifar_dir / cifar.FOLDER
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    images, labels = cifar.read_batch(folder / "data_batch_2")
    assert images.shape == (64, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[5].reshape(-1), raw["data"][5])  # (3, 32, 32) row-major = 3072 bytes
    assert labels.tolist() == raw["labels"]
    train_x, train_y = cifar.read_split(folder, "train")
    test_x, test_y = cifar.read_split(folder, "test")
    assert train_x.shape == (320, 3, 32, 32) and test_x.shape == (200, 3, 32, 32)
    assert train_y.dtype == torch.int64 and set(test_y.tolist()) <= set(range(10))


def test_verification_is_on_by_default_and_refuses_files_with_other_checksums(cifar_dir):
    with pytest.raises(DataError) as err:
        make_task(cifar_dir, verify=True).prepare()
    assert "fails its MD5 check" in one_line(err) and "data_batch_1" in str(err.value)


def test_truncated_file_is_refused_with_one_line(cifar_dir):
    path = cifar_dir / cifar.FOLDER / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError) as err:
        make_task(cifar_dir).prepare()
    assert "data_batch_3 is not a readable CIFAR-10 batch" in one_line(err)


@pytest.mark.parametrize("content", [
    {"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0, 1, 2, 3], "coarse_labels": [0, 0, 1, 1]},  # CIFAR-100
    {"data": np.zeros((4, 1024), np.uint8), "labels": [0, 1, 2, 3]},                  # wrong image size
    {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 11]},                        # labels outside 0..9
    [1, 2, 3],                                                                          # not a dict
])
def test_foreign_file_is_refused_with_one_line(cifar_dir, content):
    with open(cifar_dir / cifar.FOLDER / "test_batch", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DataError) as err:
        make_task(cifar_dir).prepare()
    message = one_line(err)
    assert "test_batch" in message and ("is not a CIFAR-10 batch" in message or "it is not CIFAR-10" in message)


def test_missing_data_offline_names_the_files_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        make_task(tmp_path / "nothing").prepare()
    message = one_line(err)
    assert "put cifar-10-python.tar.gz or cifar-10-batches-py/ in" in message and "task.download=true" in message


def test_the_archive_is_extracted_when_the_folder_is_missing(cifar_dir, tmp_path):
    root = tmp_path / "from_archive"
    root.mkdir()
    with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
        tar.add(cifar_dir / cifar.FOLDER, arcname=cifar.FOLDER)
    task = make_task(root)
    task.prepare()
    assert (root / cifar.FOLDER / "test_batch").exists() and len(task.test[1]) == 200
    other = tmp_path / "other"
    other.mkdir()
    (other / cifar.ARCHIVE).write_bytes((root / cifar.ARCHIVE).read_bytes())
    with pytest.raises(DataError) as err:  # with verification the archive's own MD5 is checked first
        make_task(other, verify=True).prepare()
    assert "cifar-10-python.tar.gz fails its MD5 check" in one_line(err)


# ---- batches and augmentation ----------------------------------------------------------------------------------
def test_crop_flip_equals_cropping_each_padded_image():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    offsets, flips = augment.draw(16, torch.Generator().manual_seed(3))
    out = augment.crop_flip(images, offsets, flips)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):
        y, x = offsets[i].tolist()
        want = padded[i, :, y:y + 32, x:x + 32]
        torch.testing.assert_close(out[i], want.flip(-1) if flips[i] else want, rtol=0, atol=0)
    assert 0 < int(flips.sum()) < 16 and offsets.min() >= 0 and offsets.max() <= 8


def test_normalize_uses_the_paper_statistics():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = augment.normalize(images)
    want = [(1 - m) / s for m, s in zip((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(want))


def test_epochs_are_deterministic_permutations_and_ranks_split_each_batch(cifar_dir):
    task = make_task(cifar_dir)
    task.prepare()
    epoch1 = list(task.train_batches(1))
    assert [len(b["labels"]) for b in epoch1] == [128, 128, 64]
    again = list(task.train_batches(1))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(epoch1, again) for k in a)
    assert not torch.equal(next(iter(task.train_batches(2)))["labels"], epoch1[0]["labels"])
    seen = torch.cat([b["images"].reshape(len(b["images"]), -1) for b in epoch1])
    assert len(torch.unique(seen, dim=0)) == 320  # every training image once
    shards = [list(task.train_batches(1, rank, 2)) for rank in (0, 1)]
    assert [len(b["labels"]) for b in shards[0]] == [64, 64, 32] == [len(b["labels"]) for b in shards[1]]
    merged = torch.cat([shards[0][0]["labels"], shards[1][0]["labels"]]).sort().values
    assert torch.equal(merged, epoch1[0]["labels"].sort().values)


def test_updates_per_epoch_is_checked_against_the_data(cifar_dir):
    with pytest.raises(UserError) as err:
        make_task(cifar_dir, updates_per_epoch=391).prepare()
    assert "set task.updates_per_epoch=3" in one_line(err)
    with pytest.raises(UserError) as err:
        make_task(cifar_dir, subset=100).prepare()
    assert "100 training images in batches of 128 make 1 updates per epoch; set task.updates_per_epoch=1" \
        in one_line(err)


def test_loss_metrics_and_evaluation(cifar_dir):
    task = make_task(cifar_dir, test_subset=150)
    task.prepare()
    model = resnet_cifar(20)
    batch = next(iter(task.train_batches(1)))
    loss_sum, stats = task.loss(model, batch)
    with torch.no_grad():
        logits = model(augment.normalize(augment.crop_flip(batch["images"], batch["offsets"], batch["flips"])))
    torch.testing.assert_close(loss_sum, torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
    assert stats["sample_size"] == 128 and stats["correct1"] == float((logits.argmax(1) == batch["labels"]).sum())
    metrics = task.metrics({"loss": 230.0, "correct1": 32.0, "sample_size": 100.0})
    assert metrics == {"loss": 2.3, "acc": 32.0}
    result = task.evaluate(model, "valid")
    assert set(result) == {"loss", "acc"} and 0 <= result["acc"] <= 100 and model.training
    assert task.finalize(model, []) == {"test_loss": result["loss"], "test_acc": result["acc"]}


# ---- models ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, params", [(20, 272_474), (32, 466_906), (56, 855_770)])
def test_cifar_resnet_depths_and_sizes(depth, params):
    model = resnet_cifar(depth)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.blocks) == 3 * (depth - 2) // 6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_depth_is_a_one_line_error():
    with pytest.raises(ValueError) as err:
        resnet_cifar(21)
    assert "6n + 2" in one_line(err)


# ---- schedules -------------------------------------------------------------------------------------------------
def lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_epoch_milestones_and_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    got = lrs(MultiStep(opt, [2, 3], 0.1, updates_per_epoch=4), opt, 14)
    assert got == pytest.approx([0.1] * 8 + [0.01] * 4 + [0.001] * 2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    got = lrs(WarmupMultiStep(opt, [2], 0.1, updates_per_epoch=4, warmup_updates=4, warmup_init_lr=0.0), opt, 10)
    assert got == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


# ---- ImageNet --------------------------------------------------------------------------------------------------
def test_imagenet_task_reads_jpeg_folders(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=4, size=40)
    task = ImageNetTask(data_dir=str(root), batch_size=4, eval_batch_size=5, updates_per_epoch=3, workers=0,
                        image_size=32)
    task.prepare()
    assert task.num_classes == 3
    batches = list(task.train_batches(1))
    assert [tuple(b["images"].shape) for b in batches] == [(4, 3, 32, 32)] * 3
    torch.testing.assert_close(torch.cat([b["labels"] for b in batches]).sort().values,
                               torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    result = task.evaluate(model, "valid")
    assert set(result) == {"loss", "acc", "acc5"} and result["acc5"] == 100.0  # 3 classes: top-5 always hits


def test_imagenet_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        ImageNetTask(data_dir=str(tmp_path), workers=0).prepare()
    assert "train/<class>/*.JPEG" in one_line(err)


@pytest.mark.gpu
def test_augmentation_and_loss_on_cuda_match_the_cpu(cifar_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    task = make_task(cifar_dir)
    task.prepare()
    batch = next(iter(task.train_batches(1)))
    model = resnet_cifar(20)
    on_gpu = {k: v.cuda() for k, v in batch.items()}
    torch.testing.assert_close(task.inputs(on_gpu).cpu(), task.inputs(batch))
    loss_cpu, _ = task.loss(model, batch)
    loss_gpu, _ = task.loss(model.cuda(), on_gpu)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-4, atol=1e-3)

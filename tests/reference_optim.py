"""Independent float64 references for the tests: Algorithm 2 (RAdam) and fairseq-style Adam, in NumPy.

Written straight from the paper's formulas (see /work/shared/PAPER.md), one plain per-tensor formula per line,
sharing no code with the `radam` package, so a test comparing the two can fail when either is wrong.

Both take the initial parameters, a gradient function grad_fn(t, thetas) -> list of arrays (so the gradient can
depend on the iterate), and a list of groups as dicts; they return the list of parameter lists after each step.
"""

from __future__ import annotations

import math

import numpy as np


def radam_reference(thetas, grad_fn, groups, steps):
    """groups: list of dicts with keys idx (indices of thetas), lr (float or callable t -> lr), betas, eps,
    weight_decay, threshold, degenerated_to_sgd, decoupled_weight_decay."""
    thetas = [np.array(x, dtype=np.float64) for x in thetas]
    m = [np.zeros_like(x) for x in thetas]
    v = [np.zeros_like(x) for x in thetas]
    history = []
    for t in range(1, steps + 1):
        grads = grad_fn(t, thetas)
        for grp in groups:
            lr = grp["lr"](t) if callable(grp["lr"]) else grp["lr"]
            b1, b2 = grp["betas"]
            wd = grp["weight_decay"]
            rho_inf = 2.0 / (1.0 - b2) - 1.0
            rho = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
            for i in grp["idx"]:
                g = np.array(grads[i], dtype=np.float64)
                if not grp["decoupled_weight_decay"]:
                    g = g + wd * thetas[i]
                v[i] = b2 * v[i] + (1.0 - b2) * g * g
                m[i] = b1 * m[i] + (1.0 - b1) * g
                m_hat = m[i] / (1.0 - b1 ** t)
                if rho > grp["threshold"]:
                    psi = math.sqrt(1.0 - b2 ** t) / (np.sqrt(v[i]) + grp["eps"])
                    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                    update = lr * r * m_hat * psi
                elif grp["degenerated_to_sgd"]:
                    update = lr * m_hat
                else:
                    continue  # no update, no weight decay
                if grp["decoupled_weight_decay"]:
                    thetas[i] = thetas[i] - lr * wd * thetas[i]
                thetas[i] = thetas[i] - update
        history.append([x.copy() for x in thetas])
    return history


def adam_reference(thetas, grad_fn, groups, steps):
    """fairseq's Adam with decoupled weight decay and Adam-2k's freeze; groups: idx, lr, betas, eps,
    weight_decay, freeze_steps."""
    thetas = [np.array(x, dtype=np.float64) for x in thetas]
    m = [np.zeros_like(x) for x in thetas]
    v = [np.zeros_like(x) for x in thetas]
    history = []
    for t in range(1, steps + 1):
        grads = grad_fn(t, thetas)
        for grp in groups:
            lr = grp["lr"](t) if callable(grp["lr"]) else grp["lr"]
            b1, b2 = grp["betas"]
            for i in grp["idx"]:
                g = np.array(grads[i], dtype=np.float64)
                v[i] = b2 * v[i] + (1.0 - b2) * g * g
                if t <= grp["freeze_steps"]:
                    continue
                thetas[i] = thetas[i] * (1.0 - lr * grp["weight_decay"])
                m[i] = b1 * m[i] + (1.0 - b1) * g
                step_size = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
                thetas[i] = thetas[i] - step_size * m[i] / (np.sqrt(v[i]) + grp["eps"])
        history.append([x.copy() for x in thetas])
    return history


def sgd_momentum_reference(theta, grad_fn, lr, b1, steps):
    """SGD with bias-corrected momentum: m = b1 m + (1 - b1) g; theta -= lr m / (1 - b1^t)."""
    theta = np.array(theta, dtype=np.float64)
    m = np.zeros_like(theta)
    history = []
    for t in range(1, steps + 1):
        g = grad_fn(t, [theta])[0]
        m = b1 * m + (1.0 - b1) * g
        theta = theta - lr * m / (1.0 - b1 ** t)
        history.append(theta.copy())
    return history

"""RAdam's `first_steps` option (Appendix C, Table 3) against an independent float64 reference.

The reference below is written from the rules in radam/radam.py's docstring (and the paper's Table 3), sharing
no code with the package: the first steps follow (rule, n) pairs, then Algorithm 2.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from radam.radam import RAdam, first_step_rule
from tests.reference_optim import radam_reference

PATHS = [None, True, False]  # fused (default), foreach, single-tensor
SHAPES = [(3, 4), (5,)]
TABLE3 = {  # Table 3 rows (with the paper's threshold 4) and the "skip" variant of the issue
    "radam": (),
    "adam_then_radam": (("adam", 4),),
    "sgd_adam_then_radam": (("sgd", 4), ("adam", 4)),
    "skip_then_radam": (("skip", 4),),
}


def four_step_reference(thetas, grad_fn, lr, b1, b2, eps, wd, threshold, first_steps, steps):
    """Float64 RAdam with decoupled weight decay whose first steps follow `first_steps` (rule, n) pairs."""
    thetas = [np.array(x, dtype=np.float64) for x in thetas]
    m = [np.zeros_like(x) for x in thetas]
    v = [np.zeros_like(x) for x in thetas]
    rules = [rule for rule, n in first_steps for _ in range(n)]
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    history = []
    for t in range(1, steps + 1):
        grads = grad_fn(t, thetas)
        rho = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
        rule = rules[t - 1] if t <= len(rules) else ("radam" if rho > threshold else "sgd")
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * g * g
            m_hat = m[i] / (1.0 - b1 ** t)
            psi = math.sqrt(1.0 - b2 ** t) / (np.sqrt(v[i]) + eps)
            if rule == "skip":
                continue
            if rule == "sgd":
                update = lr * m_hat
            elif rule == "adam":
                update = lr * m_hat * psi
            else:
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                update = lr * r * m_hat * psi
            thetas[i] = thetas[i] * (1.0 - lr * wd) - update
        history.append([x.copy() for x in thetas])
    return history


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    thetas0 = [rng.standard_normal(s) for s in SHAPES]
    scales = [rng.uniform(0.1, 3.0, s) for s in SHAPES]

    def grad_fn(t, thetas):
        noise = np.random.default_rng(1000 + t)
        return [a * x + 0.5 * noise.standard_normal(x.shape) for a, x in zip(scales, thetas)]

    return thetas0, grad_fn


def run_radam(thetas0, grad_fn, steps, **kwargs):
    params = [torch.nn.Parameter(torch.tensor(x)) for x in thetas0]
    opt = RAdam(params, **kwargs)
    history = []
    for t in range(1, steps + 1):
        for p, g in zip(params, grad_fn(t, [p.detach().numpy() for p in params])):
            p.grad = torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


@pytest.mark.parametrize("foreach", PATHS)
@pytest.mark.parametrize("variant", sorted(TABLE3))
def test_first_steps_match_the_float64_reference(variant, foreach):
    thetas0, grad_fn = make_problem()
    options = dict(lr=0.05, b1=0.9, b2=0.999, eps=1e-8, wd=1e-2, threshold=4.0)
    want = four_step_reference(thetas0, grad_fn, **options, first_steps=TABLE3[variant], steps=14)
    got = run_radam(thetas0, grad_fn, 14, lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                    threshold=4.0, first_steps=TABLE3[variant], foreach=foreach)
    for t, (g, w) in enumerate(zip(got, want), start=1):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{variant}, step {t}")


def test_the_variants_differ_exactly_where_table3_says():
    thetas0, grad_fn = make_problem()
    runs = {name: run_radam(thetas0, grad_fn, 10, lr=0.05, threshold=4.0, first_steps=fs)
            for name, fs in TABLE3.items()}
    skip = runs["skip_then_radam"]
    assert all(np.array_equal(a, b) for a, b in zip(skip[3], thetas0))  # 4 skipped steps: theta unchanged
    assert not np.allclose(skip[4][0], thetas0[0])                        # step 5 is rectified RAdam
    # SGD on steps 1-4 is what Algorithm 2 does there (rho_t <= 4): same iterates as RAdam until step 4.
    for t in range(4):
        np.testing.assert_array_equal(runs["sgd_adam_then_radam"][t][0], runs["radam"][t][0])
    assert not np.allclose(runs["sgd_adam_then_radam"][4][0], runs["radam"][4][0])  # Adam vs RAdam at step 5
    assert not np.allclose(runs["adam_then_radam"][0][0], runs["radam"][0][0])       # Adam vs SGD at step 1


def test_default_is_algorithm2_unchanged():
    thetas0, grad_fn = make_problem(seed=3)
    base = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3, threshold=5.0, degenerated_to_sgd=True,
                decoupled_weight_decay=True)
    want = radam_reference(thetas0, grad_fn, [{**base, "idx": [0, 1]}], 12)
    got = run_radam(thetas0, grad_fn, 12, **base)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_first_step_rule_walks_the_pairs():
    pairs = (("sgd", 4), ("adam", 4))
    assert [first_step_rule(pairs, t) for t in range(1, 11)] == ["sgd"] * 4 + ["adam"] * 4 + [None, None]
    assert first_step_rule((), 1) is None
    assert first_step_rule((("skip", 0), ("adam", 1)), 1) == "adam"


def test_yaml_lists_are_accepted_and_survive_a_state_dict_round_trip():
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = RAdam(params, first_steps=[["sgd", 4], ["adam", 4]])  # as Hydra passes YAML lists
    assert opt.param_groups[0]["first_steps"] == (("sgd", 4), ("adam", 4))
    params[0].grad = torch.ones(3)
    opt.step()
    clone = RAdam([torch.nn.Parameter(torch.ones(3))])
    clone.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert clone.param_groups[0]["first_steps"] == (("sgd", 4), ("adam", 4))


@pytest.mark.parametrize("bad, words", [
    ("sgd", "sequence of (rule, n) pairs"),
    ([["sgd"]], "is not a (rule, n) pair"),
    ([["adamw", 4]], "rule 'adamw' is unknown"),
    ([["sgd", -1]], "must be an integer >= 0"),
    ([["sgd", 2.5]], "must be an integer >= 0"),
])
def test_bad_first_steps_are_one_line_errors(bad, words):
    with pytest.raises(ValueError) as err:
        RAdam([torch.nn.Parameter(torch.ones(2))], first_steps=bad)
    message = str(err.value)
    assert words in message and "\n" not in message and "sgd | adam | skip" in message

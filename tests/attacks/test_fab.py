"""FAB and FAB-T: the L∞ projection against a linear program and torchattacks', the L2 one
against a quadratic program and torchattacks', the minimal distance on a linear model (known in
closed form, L∞ and L2), the contract on a tiny model, and on CIFAR-10 test images / resnet20
against torchattacks' FAB (L∞ and L2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advkit.attacks import FAB, FABT
from advkit.attacks.fab import l2_step_to_hyperplane, linf_step_to_hyperplane
from tests.attacks._helpers import accuracy, affine_nearest_boundary


def random_hyperplanes(rows: int = 60, n: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(rows, n, generator=gen)
    normals = torch.randn(rows, n, generator=gen)
    normals[:, :3] = 0  # coordinates the hyperplane ignores must not move
    values = torch.randn(rows, generator=gen) * torch.logspace(-3, 1, rows)
    return points, normals, values


def test_linf_step_is_the_linear_programs_optimum():
    linprog = pytest.importorskip("scipy.optimize").linprog
    points, normals, values = random_hyperplanes()
    steps = linf_step_to_hyperplane(points, normals, values)
    moved = points + steps
    assert moved.min() >= 0 and moved.max() <= 1
    assert (steps[:, :3] == 0).all()
    reached = ((normals * steps).sum(1) + values).abs() < 1e-4
    n = points.shape[1]
    checked = 0
    for p, w, v, d, ok in zip(points.double(), normals.double(), values.double(), steps, reached):
        # minimise t over (d, t): |d_i| <= t, 0 <= p + d <= 1, w·d = −v
        result = linprog(np.r_[np.zeros(n), 1.0],
                         A_ub=np.r_[np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]],
                         b_ub=np.zeros(2 * n),
                         A_eq=np.r_[w.numpy(), 0.0][None], b_eq=[-v.item()],
                         bounds=[(-x, 1 - x) for x in p.tolist()] + [(0, None)])
        assert result.success == bool(ok)  # infeasible for the LP exactly where the box falls short
        if ok:
            assert d.abs().max().item() == pytest.approx(result.fun, rel=1e-4, abs=1e-6)
            checked += 1
        else:  # the closest the box gets: every coordinate at its edge, on the hyperplane's side
            assert ((w * d.double()).sum() * v < 0) and torch.all((d == 0) | (p + d == 0) | (p + d == 1))
    assert checked >= 50


def test_linf_step_matches_torchattacks_projection():
    projection_linf = pytest.importorskip("torchattacks.attacks.fab").projection_linf
    points, normals, values = random_hyperplanes(rows=200, seed=1)
    # torchattacks writes the hyperplane as w·z = b
    theirs = projection_linf(points, normals, (normals * points).sum(1) - values)
    torch.testing.assert_close(linf_step_to_hyperplane(points, normals, values), theirs, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="points and normals"):
        linf_step_to_hyperplane(points, normals[:, :3], values)


def test_l2_step_is_the_quadratic_programs_optimum():
    minimize = pytest.importorskip("scipy.optimize").minimize
    points, normals, values = random_hyperplanes()
    steps = l2_step_to_hyperplane(points, normals, values)
    moved = points + steps
    assert moved.min() >= 0 and moved.max() <= 1 and (steps[:, :3] == 0).all()
    reached = ((normals * steps).sum(1) + values).abs() < 1e-4
    assert reached.sum() >= 50
    for p, w, v, d in zip(points.double()[reached][:30], normals.double()[reached][:30],
                          values.double()[reached][:30], steps[reached][:30]):
        # minimise ‖d‖² subject to w·d = −v and 0 <= p + d <= 1
        result = minimize(lambda z: z @ z, np.zeros(len(p)), jac=lambda z: 2 * z, method="SLSQP",
                          constraints=[{"type": "eq", "fun": lambda z, w=w, v=v: w.numpy() @ z + v.item(),
                                        "jac": lambda z, w=w: w.numpy()}],
                          bounds=[(-x, 1 - x) for x in p.tolist()], options={"ftol": 1e-14, "maxiter": 500})
        assert result.success
        assert d.norm().item() == pytest.approx(result.fun ** 0.5, rel=1e-4, abs=1e-6)
    for p, w, v, d in zip(points[~reached], normals[~reached], values[~reached], steps[~reached]):
        # the closest the box gets: every coordinate the hyperplane sees at its edge, on its side
        assert (w * d).sum() * v < 0 and torch.all((w == 0) | (p + d == 0) | (p + d == 1))


def test_l2_step_matches_torchattacks_projection():
    projection_l2 = pytest.importorskip("torchattacks.attacks.fab").projection_l2
    for seed in (1, 2):
        points, normals, values = random_hyperplanes(rows=200, seed=seed)
        theirs = projection_l2(points, normals, (normals * points).sum(1) - values)
        torch.testing.assert_close(l2_step_to_hyperplane(points, normals, values), theirs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="points and normals"):
        l2_step_to_hyperplane(points, normals[:, :3], values)


def test_fab_finds_a_linear_models_minimal_distance():
    """For an affine classifier away from the box edges, the least L∞ distance to class c's boundary
    is (z_y − z_c) / ‖w_y − w_c‖_1: FAB may not go below it and should come close."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    x = 0.4 + 0.2 * torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    minimal, _, _ = affine_nearest_boundary(model, x, y, dual_p=1)
    for attack in (FAB(model, eps=1.0, steps=30), FABT(model, eps=1.0, steps=30, n_targets=4)):
        adv = attack(x, y)
        ratio = attack.norms / minimal
        assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.02, (attack.name, ratio)
        assert accuracy(model, adv, y) == 0
        torch.testing.assert_close((adv - x).flatten(1).abs().amax(1), attack.norms)
    minimal_l2, _, _ = affine_nearest_boundary(model, x, y, dual_p=2)
    for attack in (FAB(model, eps=10.0, steps=30, norm="l2"), FABT(model, eps=10.0, steps=30, n_targets=4, norm="l2")):
        adv = attack(x, y)
        ratio = attack.norms / minimal_l2
        assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.02, (attack.name, ratio)
        assert accuracy(model, adv, y) == 0
        torch.testing.assert_close((adv - x).flatten(1).norm(dim=1), attack.norms)


def test_fab_contract(tiny):
    x = torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = tiny(x).argmax(1)
    labels = pred.clone()
    labels[0] = (pred[0] + 1) % 4  # misclassified from the start
    eps = torch.tensor([0.05, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    attack = FAB(tiny, steps=8, restarts=2, seed=4)
    adv = attack(x, labels, eps=eps)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    dist = (adv - x).flatten(1).abs().amax(1)
    assert (dist <= eps + 1e-7).all()
    assert torch.equal(adv[:2], x[:2]) and attack.norms[0] == 0 and attack.norms[1] > 0
    changed = dist > 0
    assert changed.sum() >= 3  # (eps 0 and the misclassified image stay put; most others are fooled)
    with torch.no_grad():
        assert (tiny(adv[changed]).argmax(1) != labels[changed]).all()
    torch.testing.assert_close(dist[changed], attack.norms[changed])
    # unchanged images: nothing found within eps (maybe something farther)
    assert (attack.norms[~changed][1:] > eps[~changed][1:]).all()
    assert torch.equal(adv, FAB(tiny, steps=8, restarts=2, seed=4)(x, labels, eps=eps))
    assert FABT(tiny, steps=3, n_targets=2).config()["n_targets"] == 2
    for kwargs, message in [({"steps": 0}, "steps"), ({"restarts": 0}, "restarts"), ({"alpha_max": 1.5}, "alpha_max"),
                            ({"eta": 0.9}, "eta"), ({"beta": 0}, "beta")]:
        with pytest.raises(ValueError, match=message):
            FAB(tiny, **kwargs)
    with pytest.raises(ValueError, match="n_targets"):
        FABT(tiny, n_targets=0)
    with pytest.raises(ValueError, match="no targeted mode"):
        FAB(tiny, targeted=True)


@pytest.mark.parametrize("targeted_search", [True, False], ids=["fab-t", "fab"])
def test_fab_matches_torchattacks(resnet20_cifar, targeted_search):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    # every other image (50): FAB-T's robust accuracy equals torchattacks' on either half as on all
    # 100 (measured 0.26/0.26, 0.24/0.24, 0.25/0.25); FAB takes one backward per class per step
    x, y = x[::2], y[::2]
    x = x.contiguous()  # torchattacks' targeted FAB views the gradient, which needs contiguity
    eps, steps = 1 / 255, 5  # (10 steps: the same agreement, twice the time)
    ours = (FABT(model, eps=eps, steps=steps) if targeted_search else FAB(model, eps=eps, steps=steps))(x, y)
    with torch.random.fork_rng():
        theirs = torchattacks.FAB(model, eps=eps, steps=steps, multi_targeted=targeted_search, n_classes=10,
                                  seed=0)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.02, (acc_ours, acc_theirs)
    assert acc_ours < accuracy(model, x, y) - 0.4
    assert (ours - x).abs().max() <= eps + 1e-6


def test_fab_t_l2_matches_torchattacks(resnet20_cifar):
    """L2, radius 0.1, 5 steps, 5 images per class: robust accuracy within 2 points of
    torchattacks' multi-targeted FAB with norm="L2" (measured: 0.40 and 0.40; untargeted FAB too)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    x, y = x[::2].contiguous(), y[::2]
    eps, steps = 0.1, 5
    ours = FABT(model, eps=eps, steps=steps, norm="l2")(x, y)
    with torch.random.fork_rng():
        theirs = torchattacks.FAB(model, norm="L2", eps=eps, steps=steps, multi_targeted=True, n_classes=10,
                                  seed=0)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.02, (acc_ours, acc_theirs)
    assert acc_ours < accuracy(model, x, y) - 0.3
    assert ((ours - x).flatten(1).norm(dim=1) <= eps + 1e-6).all()

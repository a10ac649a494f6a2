"""Carlini–Wagner L2: its margin against the definition, its contract and binary search on a tiny
model, per-image early abort (a batch equals its halves), and torchattacks' CW on CIFAR-10."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import CW
from advkit.attacks.cw import cw_margin
from tests.attacks._helpers import accuracy, affine_nearest_boundary


def test_cw_margin_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    logits = -torch.rand(16, 6, generator=gen) * 5  # all negative: a masked max of zeros would be wrong
    labels = torch.randint(0, 6, (16,), generator=gen)
    for targeted in (False, True):
        expected = []
        for z, y in zip(logits.tolist(), labels.tolist()):
            other = max(v for j, v in enumerate(z) if j != y)
            expected.append(other - z[y] if targeted else z[y] - other)
        torch.testing.assert_close(cw_margin(logits, labels, targeted), torch.tensor(expected))


@pytest.fixture(scope="module")
def linear():
    """An affine 4-class model: its least L2 distance to each boundary is known in closed form."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 10, 4)).eval()


def test_cw_contract(linear):
    torch.manual_seed(1)
    x = torch.rand(8, 3, 10, 10)
    with torch.no_grad():
        labels = linear(x).argmax(1)
    labels[0] = (labels[0] + 1) % 4  # misclassified from the start: returned as it is
    attack = CW(linear, c=1.0, steps=40, lr=0.05)
    adv = attack(x, labels)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv[0], x[0]) and attack.norms[0] == 0
    found = torch.isfinite(attack.norms)
    assert 4 <= found.sum() < 8  # some found, some not: both branches are checked
    with torch.no_grad():
        assert (linear(adv[found]).argmax(1) != labels[found]).all()
    torch.testing.assert_close((adv - x).flatten(1).norm(dim=1)[found], attack.norms[found])
    assert torch.equal(adv[~found], x[~found])
    for kwargs, message in [({"c": 0}, "c must"), ({"kappa": -1}, "kappa"), ({"steps": 0}, "steps"),
                            ({"lr": 0}, "lr"), ({"binary_search_steps": 0}, "binary_search_steps")]:
        with pytest.raises(ValueError, match=message):
            CW(linear, **kwargs)


def test_cw_binary_search_approaches_the_minimal_distance(linear):
    x = 0.4 + 0.2 * torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = linear(x).argmax(1)
    minimal, _, _ = affine_nearest_boundary(linear, x, y, dual_p=2)
    one = CW(linear, c=1.0, steps=100)
    one(x, y)
    searched = CW(linear, c=1.0, steps=100, binary_search_steps=6)
    searched(x, y)
    # the first search step is the single run, so the search can only shrink each norm
    assert (searched.norms <= one.norms).all()
    ratio = searched.norms / minimal
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.05, ratio
    assert (one.norms / minimal).max() > ratio.max() + 0.05  # c = 1 alone stays farther for some image


def test_cw_kappa_and_targets(linear):
    x = 0.4 + 0.2 * torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = linear(x).argmax(1)
    confident = CW(linear, c=10.0, kappa=0.2, steps=60, lr=0.05)
    adv = confident(x, y)
    assert torch.isfinite(confident.norms).all()
    with torch.no_grad():
        assert (cw_margin(linear(adv), y) < -0.2).all()
    targets = (y + 1) % 4
    targeted = CW(linear, c=10.0, steps=60, lr=0.05, targeted=True)
    adv = targeted(x, targets)
    found = torch.isfinite(targeted.norms)
    assert found.sum() >= 6
    with torch.no_grad():
        assert (linear(adv[found]).argmax(1) == targets[found]).all()
    with pytest.raises(ValueError, match="needs target labels"):
        targeted(x)


def test_cw_batch_equals_its_halves(tiny):
    """Early abort is per image, so which images share a batch does not change any result."""
    x = torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    attack = CW(tiny, c=1.0, steps=40, lr=0.05)
    whole = attack(x)
    halves = torch.cat([attack(x[:3]), attack(x[3:])])
    found = (whole != x).flatten(1).any(1)
    assert 2 <= found.sum() and found[:3].any() and found[3:].any()  # both halves have images CW changed
    torch.testing.assert_close(whole, halves, atol=1e-5, rtol=0)


def test_cw_matches_torchattacks(resnet20_cifar):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    x = x.contiguous()
    ours = CW(model, c=0.1, steps=20)(x, y)
    theirs = torchattacks.CW(model, c=0.1, steps=20)(x, y).detach()
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.02
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        both = clean_ok & (model(ours).argmax(1) != y) & (model(theirs).argmax(1) != y)
    l2_ours = (ours - x).flatten(1).norm(dim=1)[both].mean()
    l2_theirs = (theirs - x).flatten(1).norm(dim=1)[both].mean()
    assert both.sum() >= 80 and abs(l2_ours / l2_theirs - 1) <= 0.05, (l2_ours, l2_theirs)

"""DeepFool: the exact distance on an affine model (one step, L2 and L∞), its contract, and
torchattacks' DeepFool on CIFAR-10 / resnet20."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import DeepFool
from tests.attacks._helpers import Quantized, accuracy, affine_nearest_boundary


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_lands_just_past_an_affine_models_nearest_boundary(norm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    x = 0.4 + 0.2 * torch.rand(12, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    # the distance to a hyperplane in a norm divides by the dual norm
    minimal, margin, size = affine_nearest_boundary(model, x, y, dual_p=2 if norm == "l2" else 1)
    attack = DeepFool(model, norm=norm)
    adv = attack(x, y)
    assert accuracy(model, adv, y) == 0
    # one step onto the boundary with the paper's 1e-4 push, times 1 + overshoot: above the minimum
    expected = (margin + 1e-4) / size * 1.02
    torch.testing.assert_close(attack.norms, expected, rtol=1e-3, atol=0)
    assert (attack.norms > minimal).all()
    distance = (adv - x).flatten(1)
    torch.testing.assert_close(distance.norm(dim=1) if norm == "l2" else distance.abs().amax(1), attack.norms)


def test_deepfool_contract(tiny):
    x = torch.rand(6, 3, 10, 10)
    with torch.no_grad():
        labels = tiny(x).argmax(1)
    labels[0] = (labels[0] + 1) % 4
    # 8-bit quantized input: a zero gradient, so no step moves and nothing is found
    attack = DeepFool(Quantized(tiny).eval(), steps=3)
    adv = attack(x, labels)
    assert torch.equal(adv, x)
    assert attack.norms[0] == 0 and torch.isinf(attack.norms[1:]).all()
    assert DeepFool(tiny, steps=2)(x[:0]).shape == (0, 3, 10, 10)
    for kwargs, message in [({"steps": 0}, "steps"), ({"overshoot": -0.1}, "overshoot"), ({"norm": "l1"}, "norm")]:
        with pytest.raises(ValueError, match=message):
            DeepFool(tiny, **kwargs)


def test_deepfool_matches_torchattacks(resnet20_cifar):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    # torchattacks' DeepFool goes one image at a time, a full Jacobian per step (1.7 s an image):
    # one image per class (measured on 20: mean L2 ratio 1.0001, as on either half of them)
    x, y = x[::10].contiguous(), y[::10]
    ours = DeepFool(model)(x, y)
    theirs = torchattacks.DeepFool(model)(x, y).detach()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        fooled_ours = clean & (model(ours).argmax(1) != y)
        fooled_theirs = clean & (model(theirs).argmax(1) != y)
    # ours fools every correctly classified image; torchattacks' leaves a few after its 50 steps
    assert fooled_ours.sum() == clean.sum() >= fooled_theirs.sum() >= clean.sum() - 4
    both = fooled_ours & fooled_theirs
    l2_ours = (ours - x).flatten(1).norm(dim=1)[both].mean()
    l2_theirs = (theirs - x).flatten(1).norm(dim=1)[both].mean()
    assert abs(l2_ours / l2_theirs - 1) <= 0.05, (l2_ours, l2_theirs)

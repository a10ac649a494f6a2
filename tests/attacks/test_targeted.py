"""Targeted mode of the gradient attacks, the target helpers, and a cross-check with torchattacks'
targeted mode (``set_mode_targeted_by_label``) on 100 CIFAR-10 test images and resnet20."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks import (
    DIM,
    FGSM,
    MIFGSM,
    PGD,
    TIDIM,
    DenoiseThenAttack,
    GaussianNoise,
    Pasadena,
    least_likely_targets,
    random_targets,
    shifted_targets,
)
from advkit.models import create_classifier


def test_targeted_fgsm_steps_down_the_targets_loss(tiny):
    x = torch.rand(8, 3, 12, 12) * 0.8 + 0.1
    target = torch.arange(8) % 4
    adv = FGSM(tiny, eps=0.01, targeted=True)(x, target)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(tiny(xg), target, reduction="sum"), xg)
    torch.testing.assert_close(adv, (x - 0.01 * grad.sign()).clamp(0, 1))
    untargeted = FGSM(tiny, eps=0.01)(x, target)
    torch.testing.assert_close(untargeted, (x + 0.01 * grad.sign()).clamp(0, 1))


def test_targeted_needs_labels_and_is_recorded(tiny):
    x = torch.rand(2, 3, 8, 8)
    for attack in (PGD(tiny, steps=1, targeted=True), MIFGSM(tiny, steps=1, targeted=True)):
        with pytest.raises(ValueError, match="needs target labels"):
            attack(x)
        assert attack.config()["targeted"] is True
    assert PGD(tiny).config()["targeted"] is False
    assert DIM(tiny, targeted=True).targeted and TIDIM(tiny, targeted=True).config()["targeted"] is True
    wrapped = DenoiseThenAttack(nn.Identity(), PGD(tiny, steps=1, targeted=True))
    assert wrapped.targeted and wrapped.config()["attack"]["targeted"] is True
    for cls in (GaussianNoise, Pasadena):
        with pytest.raises(ValueError, match="no targeted mode"):
            cls(tiny, targeted=True) if cls is GaussianNoise else cls(tiny, "gaussian", targeted=True)
    assert "targeted" not in GaussianNoise().config()  # an objective without classes says nothing


def test_targeted_pgd_early_stop_freezes_images_at_their_target(tiny):
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        target = tiny(x).argmax(1)  # already at the target: nothing to do
    adv = PGD(tiny, eps=0.1, steps=5, targeted=True, early_stop=True, random_start=False)(x, target)
    assert torch.equal(adv, x)


def test_target_helpers():
    labels = torch.arange(1000) % 10
    gen = torch.Generator().manual_seed(0)
    targets = random_targets(labels, 10, gen)
    assert (targets != labels).all() and targets.min() >= 0 and targets.max() <= 9
    counts = torch.bincount(targets[labels == 3], minlength=10)
    assert counts[3] == 0 and (counts[torch.arange(10) != 3] > 0).all()  # every other class is drawn
    assert torch.equal(random_targets(labels, 10, torch.Generator().manual_seed(0)), targets)
    assert torch.equal(shifted_targets(torch.tensor([0, 8, 9]), 10), torch.tensor([1, 9, 0]))
    with pytest.raises(ValueError, match="maps every label to itself"):
        shifted_targets(labels, 10, shift=20)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        random_targets(torch.tensor([3, 10]), 10)

    class Fixed(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, -2.0, 5.0, -1.0], [3.0, 2.0, 1.0, 4.0]])

    assert least_likely_targets(Fixed(), torch.zeros(2, 3, 4, 4)).tolist() == [1, 2]
    assert least_likely_targets(Fixed(), torch.zeros(2, 3, 4, 4), rank=2).tolist() == [3, 1]


@pytest.fixture(scope="module")
def cifar_targets(cifar_first_100, weights_dir):
    x, y = cifar_first_100
    model = create_classifier("resnet20")
    return model, x, random_targets(y, 10, torch.Generator().manual_seed(0))


def _hit_rate(model, adv, target):
    with torch.no_grad():
        return (model(adv).argmax(1) == target).float().mean().item()


def test_targeted_mifgsm_equals_torchattacks(cifar_targets):
    """No random start: our targeted MI-FGSM and torchattacks' take the same steps."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, target = cifar_targets
    eps = 4 / 255
    ours = MIFGSM(model, eps=eps, steps=10, targeted=True)(x, target)
    theirs_attack = torchattacks.MIFGSM(model, eps=eps, alpha=eps / 10, steps=10, decay=1.0)
    theirs_attack.set_mode_targeted_by_label(quiet=True)
    theirs = theirs_attack(x, target)
    hit_ours, hit_theirs = _hit_rate(model, ours, target), _hit_rate(model, theirs, target)
    assert abs(hit_ours - hit_theirs) <= 0.02, (hit_ours, hit_theirs)
    assert 0.3 < hit_ours < 0.97, hit_ours  # neither trivial nor saturated at this radius
    assert ((ours - theirs).abs() <= 1e-6).float().mean().item() >= 0.99


def test_targeted_pgd_matches_torchattacks_success(cifar_targets):
    """Random starts differ in their generator, so the success rates are compared (within 5 points)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, target = cifar_targets
    eps, steps = 2 / 255, 10
    ours = PGD(model, eps=eps, steps=steps, rel_step=0.25, targeted=True)(x, target)
    theirs_attack = torchattacks.PGD(model, eps=eps, alpha=eps * 0.25, steps=steps, random_start=True)
    theirs_attack.set_mode_targeted_by_label(quiet=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = theirs_attack(x, target)
    hit_ours, hit_theirs = _hit_rate(model, ours, target), _hit_rate(model, theirs, target)
    assert abs(hit_ours - hit_theirs) <= 0.05, (hit_ours, hit_theirs)
    assert 0.2 < hit_ours < 0.97, hit_ours
    assert (ours - x).abs().max() <= eps + 1e-6
    # the untargeted attack on the same budget reaches the random target far less often
    untargeted = PGD(model, eps=eps, steps=steps, rel_step=0.25)(x)
    assert _hit_rate(model, untargeted, target) < hit_ours - 0.2

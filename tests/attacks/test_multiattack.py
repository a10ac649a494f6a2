"""MultiAttack: attacks in turn on what the earlier ones left, the first success kept per image."""

from __future__ import annotations

import pytest
import torch

from advkit.attacks import FGSM, PGD, AutoAttack, DeepFool, MultiAttack, Square
from tests.attacks._helpers import accuracy


def _batch(tiny, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        return x, tiny(x).argmax(1)


def test_first_success_per_image_and_history(tiny):
    x, y = _batch(tiny)
    # PGD without a random start attacks each image alike in any batch, so the ensemble (PGD on
    # what FGSM left) can be held against PGD alone
    weak, strong = FGSM(tiny, eps=0.01), PGD(tiny, eps=0.05, steps=10, random_start=False)
    multi = MultiAttack([weak, strong])
    out = multi(x, y)
    weak_out = weak(x, y)
    with torch.no_grad():
        weak_hit = tiny(weak_out).argmax(1) != y
    assert weak_hit.any() and not weak_hit.all()
    assert torch.equal(out[weak_hit], weak_out[weak_hit])  # the first attack's success is kept
    names = [n for n, _ in multi.history]
    robust = [r for _, r in multi.history]
    assert names == ["clean", "fgsm", "pgd"] and robust[0] == 1.0
    assert 0 < robust[2] < robust[1] < robust[0]  # each stage fooled some, some survived both
    assert robust[-1] == pytest.approx(accuracy(tiny, out, y))
    assert robust[-1] <= accuracy(tiny, strong(x, y), y) + 1e-9
    # images no attack fooled come back unchanged
    with torch.no_grad():
        survived = tiny(out).argmax(1) == y
    assert torch.equal(out[survived], x[survived])


def test_radius_goes_to_the_attacks_that_take_one(tiny):
    x, y = _batch(tiny, 8)
    multi = MultiAttack([PGD(tiny, eps=0.5, steps=5, random_start=False), DeepFool(tiny, steps=5)])
    out = multi(x, y, eps=0.02)
    alone = PGD(tiny, eps=0.02, steps=5, random_start=False)(x, y)
    with torch.no_grad():
        hit = tiny(alone).argmax(1) != y
    assert hit.any() and not hit.all()
    assert torch.equal(out[hit], alone[hit])  # PGD ran at 0.02, not at its own 0.5
    assert multi.history[-1][1] == 0.0  # DeepFool, with no radius, fooled the rest
    assert multi.config()["attacks"][1]["name"] == "deepfool"


def test_single_attack_and_arguments(tiny):
    x, y = _batch(tiny, 8)
    pgd = PGD(tiny, eps=0.05, steps=5)
    alone = pgd(x, y)
    with torch.no_grad():
        hit = tiny(alone).argmax(1) != y
    assert hit.any() and not hit.all()
    out = MultiAttack([PGD(tiny, eps=0.05, steps=5)])(x, y)
    assert torch.equal(out[hit], alone[hit]) and torch.equal(out[~hit], x[~hit])
    with pytest.raises(ValueError, match="at least one"):
        MultiAttack([])
    with pytest.raises(TypeError, match="advkit Attack"):
        MultiAttack([tiny])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="all untargeted or all targeted"):
        MultiAttack([PGD(tiny), PGD(tiny, targeted=True)])


def test_targeted_ensemble(tiny):
    x, y = _batch(tiny, 8)
    targets = (y + 1) % 4
    multi = MultiAttack([FGSM(tiny, eps=0.05, targeted=True), Square(tiny, eps=0.3, queries=50, targeted=True)])
    out = multi(x, targets)
    assert multi.targeted and multi.history[0][1] == 1.0  # none at its target yet
    with torch.no_grad():
        at_target = (tiny(out).argmax(1) == targets).float().mean().item()
    assert multi.history[-1][1] == pytest.approx(1 - at_target) and 0 < at_target < 1


def test_autoattack_is_a_multiattack(tiny):
    attack = AutoAttack(tiny, eps=0.05, version="fast", steps=3)
    assert isinstance(attack, MultiAttack)
    x, y = _batch(tiny, 8)
    attack(x, y)
    assert [n for n, _ in attack.history] == ["clean", "apgd-ce", "apgd-dlr"]
    assert attack.history[-1][1] < 1

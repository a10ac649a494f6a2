"""APGD-T against torchattacks' APGDT and its loss against its definition; the AutoAttack-style
ensemble's bookkeeping, and its black-box stage on a model without a gradient (CIFAR-10/resnet20)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import APGD, APGDT, AutoAttack
from advkit.attacks.apgdt import targeted_dlr_loss
from tests.attacks._helpers import Quantized, accuracy


def test_targeted_dlr_loss_matches_its_definition():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 10, generator=gen)
    labels = torch.randint(0, 10, (32,), generator=gen)
    targets = (labels + 1 + torch.randint(0, 9, (32,), generator=gen)) % 10
    expected = []
    for z, y, t in zip(logits.tolist(), labels.tolist(), targets.tolist()):
        o = sorted(z, reverse=True)
        expected.append(-(z[y] - z[t]) / (o[0] - (o[2] + o[3]) / 2 + 1e-12))
    torch.testing.assert_close(targeted_dlr_loss(logits, labels, targets), torch.tensor(expected))
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_apgdt_and_autoattack_arguments():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with pytest.raises(ValueError, match="n_targets"):
        APGDT(model, n_targets=0)
    with pytest.raises(ValueError, match="no targeted mode"):
        APGDT(model, targeted=True)
    with pytest.raises(ValueError, match="unknown version"):
        AutoAttack(model, version="plus")
    config = AutoAttack(model, steps=7, queries=9).config()
    assert [a["name"] for a in config["attacks"]] == ["apgd", "apgd-t", "fab-t", "square"]
    assert config["attacks"][1]["loss"] == "dlr-targeted" and config["attacks"][3]["queries"] == 9
    assert config["attacks"][2]["steps"] == 7 and config["attacks"][2]["n_targets"] == 9
    assert [a["loss"] for a in AutoAttack(model, version="fast").config()["attacks"]] == ["ce", "dlr"]




def test_apgdt_matches_torchattacks(resnet20_cifar):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    eps, steps = 1 / 255, 10
    ours = APGDT(model, eps=eps, steps=steps)(x, y)
    with torch.random.fork_rng():
        theirs = torchattacks.APGDT(model, eps=eps, steps=steps, n_classes=10, seed=0)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.03, (acc_ours, acc_theirs)
    assert acc_ours < accuracy(model, x, y) - 0.4
    assert (ours - x).abs().max() <= eps + 1e-6


def test_apgdt_l2_matches_torchattacks(resnet20_cifar):
    """L2, radius 0.1, 5 steps, 5 images per class (measured: 0.36 and 0.36; 10 steps on all 100
    images: 0.37 and 0.37)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    x, y = x[::2].contiguous(), y[::2]
    eps, steps = 0.1, 5
    ours = APGDT(model, norm="l2", eps=eps, steps=steps)(x, y)
    with torch.random.fork_rng():
        theirs = torchattacks.APGDT(model, norm="L2", eps=eps, steps=steps, n_classes=10, seed=0)(x, y)
    acc_ours, acc_theirs = accuracy(model, ours, y), accuracy(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.041, (acc_ours, acc_theirs)
    assert ((ours - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()


def test_autoattack_l2_runs_every_stage_in_l2(resnet20_cifar):
    """norm="l2": all four stages attack the L2 ball; on the 8-bit quantized model (zero gradient)
    only the black-box Square stage fools images (5 images per class)."""
    model, x, y = resnet20_cifar
    x, y = x[::2], y[::2]
    quantized = Quantized(model).eval()
    attack = AutoAttack(quantized, eps=0.5, norm="l2", steps=5, n_targets=1, queries=100)
    adv = attack(x, y)
    assert all(sub["norm"] == "l2" for sub in attack.config()["attacks"]) and attack.config()["norm"] == "l2"
    robust = dict(attack.history)
    assert robust["apgd-t"] >= robust["clean"] - 0.041, attack.history
    assert robust["square"] <= robust["apgd-t"] - 0.1, attack.history
    assert ((adv - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all()
    with pytest.raises(ValueError, match="norm must be"):
        AutoAttack(model, norm="l1")


def test_autoattack_is_the_worst_case_of_its_attacks(resnet20_cifar):
    model, x, y = resnet20_cifar
    x, y = x[::2], y[::2]  # (5 images per class: what is checked is the ensemble's bookkeeping)
    eps = 1 / 255
    attack = AutoAttack(model, eps=eps, steps=10, n_targets=3, queries=50)
    adv = attack(x, y)
    names = [name for name, _ in attack.history]
    robust = [acc for _, acc in attack.history]
    assert names == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert robust == sorted(robust, reverse=True)
    assert robust[0] == pytest.approx(accuracy(model, x, y)) and robust[-1] == pytest.approx(accuracy(model, adv, y))
    # its first stage is APGD-CE as it runs alone, so the ensemble is never weaker
    alone = accuracy(model, APGD(model, eps=eps, steps=10, early_stop=True)(x, y), y)
    assert robust[1] == pytest.approx(alone)
    # images no attack fooled come back clean, as AutoAttack's
    with torch.no_grad():
        survived = model(adv).argmax(1) == y
    assert torch.equal(adv[survived], x[survived])
    assert (adv - x).abs().max() <= eps + 1e-6


def test_autoattacks_black_box_stage_finds_what_gradients_miss(resnet20_cifar):
    """8-bit quantized input: zero gradient, so the APGD stages fool nothing and only Square does
    (5 images per class)."""
    model, x, y = resnet20_cifar
    x, y = x[::2], y[::2]

    quantized = Quantized(model).eval()
    attack = AutoAttack(quantized, eps=2 / 255, steps=5, n_targets=1, queries=100)
    attack(x, y)
    robust = dict(attack.history)
    assert robust["apgd-t"] >= robust["clean"] - 0.041, attack.history  # random starts: 2 of 50 images at most
    assert robust["square"] <= robust["apgd-t"] - 0.05, attack.history

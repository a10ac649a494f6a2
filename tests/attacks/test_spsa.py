"""SPSA: its gradient estimate on a linear model, its contract on small models, and on CIFAR-10 /
resnet20 against torchattacks' SPSA (same directions: the same images) and a gradient-free model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks import PGD, SPSA
from tests.attacks._helpers import Counting, Quantized, accuracy


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).eval()


def _margin_gradient(model, x, y):
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    others = logits.scatter(1, y[:, None], -1e9).amax(1)
    (grad,) = torch.autograd.grad((logits.gather(1, y[:, None]).squeeze(1) - others).sum(), xg)
    return grad


def test_margin():
    logits = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 2.0]])
    assert SPSA(nn.Identity()).margin(logits, torch.tensor([1, 0])).tolist() == [3.0, 1.0]
    targeted = SPSA(nn.Identity(), targeted=True)
    assert targeted.margin(logits, torch.tensor([2, 2])).tolist() == [3.0, 1.0]  # best other − target


def test_gradient_estimate_converges_to_the_gradient(linear):
    """On a linear model the finite differences are exact, so the estimate is the gradient plus
    zero-mean noise that shrinks as the number of directions grows."""
    x = torch.rand(3, 3, 4, 4) * 0.5 + 0.25
    with torch.no_grad():
        y = linear(x).argmax(1)
    exact = _margin_gradient(linear, x, y)
    few = SPSA(linear, samples=8, sample_batch=8).estimate_gradient(x, y)
    many = SPSA(linear, samples=4000, sample_batch=500).estimate_gradient(x, y)
    cos_few = F.cosine_similarity(few.flatten(1), exact.flatten(1)).min()
    cos_many = F.cosine_similarity(many.flatten(1), exact.flatten(1)).min()
    assert cos_many > 0.97 and cos_many > cos_few, (cos_many, cos_few)
    # the chunking of directions into forward passes changes nothing
    torch.testing.assert_close(SPSA(linear, samples=12, sample_batch=5).estimate_gradient(x, y),
                               SPSA(linear, samples=12, sample_batch=12).estimate_gradient(x, y))


def test_contract_and_query_budget(linear):
    x = torch.rand(8, 3, 4, 4)
    eps = torch.linspace(0, 0.1, 8)
    counted = Counting(linear)
    adv = SPSA(counted, steps=3, samples=4, sample_batch=2, early_stop=False)(x, eps=eps)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert ((adv - x).abs().flatten(1).amax(1) <= eps + 1e-7).all()
    assert torch.equal(adv[0], x[0])
    # one look at the clean images for the labels, then 2 · samples per image and step
    assert counted.images == 8 * (1 + 3 * 2 * 4)
    same = SPSA(linear, steps=3, samples=4, sample_batch=2, early_stop=False)
    assert torch.equal(same(x, eps=eps), adv)
    assert not torch.equal(same(x, eps=eps), adv)  # the generator advances with every call
    config = SPSA(linear).config()
    assert config["name"] == "spsa" and config["steps"] == 100 and config["samples"] == 128
    assert config["loss"] == "margin" and config["early_stop"] is True


def test_probes_stay_images(linear):
    """Clipped probes never leave [0, 1]; unclipped ones leave it by δ at saturated pixels."""
    seen = []

    class Recording(nn.Module):
        def forward(self, x):
            seen.append((x.min().item(), x.max().item()))
            return linear(x)

    x = torch.rand(4, 3, 4, 4)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    y = torch.zeros(4, dtype=torch.long)
    SPSA(Recording(), steps=2, samples=4, early_stop=False)(x, y)
    assert min(lo for lo, _ in seen) >= 0 and max(hi for _, hi in seen) <= 1
    seen.clear()
    SPSA(Recording(), steps=1, samples=4, delta=0.01, early_stop=False, clip_probes=False)(x, y)
    assert min(lo for lo, _ in seen) == pytest.approx(-0.01) and max(hi for _, hi in seen) == pytest.approx(1.01)


def test_fools_stops_early_and_reaches_targets(linear):
    torch.manual_seed(1)
    x = torch.rand(16, 3, 4, 4) * 0.5 + 0.25
    with torch.no_grad():
        y = linear(x).argmax(1)
    y[0] = (y[0] + 1) % 4  # misclassified from the start: returned as it is
    adv = SPSA(linear, eps=0.2, steps=30, samples=16)(x, y)
    with torch.no_grad():
        pred = linear(adv).argmax(1)
    assert torch.equal(adv[0], x[0])
    assert (pred != y).float().mean() >= 0.9
    target = (y + 2) % 4
    hit = SPSA(linear, eps=0.3, steps=40, samples=16, targeted=True)(x, target)
    with torch.no_grad():
        assert (linear(hit).argmax(1) == target).float().mean() >= 0.7


def test_arguments(linear):
    for kwargs, needle in (({"steps": 0}, "steps"), ({"samples": 0}, "samples"), ({"sample_batch": 0}, "sample_batch"),
                           ({"delta": 0.0}, "delta"), ({"lr": -1.0}, "lr")):
        with pytest.raises(ValueError, match=needle):
            SPSA(linear, **kwargs)
    with pytest.raises(ValueError, match="eps must lie in"):
        SPSA(linear)(torch.rand(1, 3, 4, 4), eps=8)
    with pytest.raises(ValueError, match="eot_samples"):
        SPSA(linear, eot_samples=2)


def test_matches_torchattacks(resnet20_cifar):
    """Same settings and the same directions (torchattacks draws them from the global generator
    with bernoulli_, we from our own seeded the same way) and probes left unclipped as theirs: the
    same images up to float rounding."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    x, y = x[::2].contiguous(), y[::2]
    eps = 2 / 255
    ours = SPSA(model, eps=eps, steps=2, samples=16, sample_batch=8, early_stop=False, clip_probes=False)(x, y)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.SPSA(model, eps=eps, nb_iter=2, nb_sample=16, max_batch_size=8)(x, y)
    assert ((ours - theirs).abs() <= 1e-6).float().mean().item() >= 0.999
    assert accuracy(model, ours, y) == accuracy(model, theirs, y)
    assert accuracy(model, ours, y) < accuracy(model, x, y) - 0.03  # two steps already fool some


def test_needs_no_gradient(resnet20_cifar):
    """Input quantized to 8 bits: the gradient is zero, so PGD moves only by its random start, while
    SPSA's finite differences (δ = 0.01, wider than an 8-bit level) attack as on the plain model."""
    model, x, y = resnet20_cifar
    x, y = x[::4], y[::4]
    quantized = Quantized(model).eval()
    eps = 2 / 255
    pgd = accuracy(quantized, PGD(quantized, eps=eps, steps=5, rel_step=0.25)(x, y), y)
    spsa = accuracy(quantized, SPSA(quantized, eps=eps, steps=5, samples=16)(x, y), y)
    assert spsa < pgd - 0.05, (spsa, pgd)  # measured on these 25 images: 72 % against 88 %

"""The Nesterov, scale-invariance and variance-tuning transfer attacks: NI-FGSM, SI-NI-FGSM, VMI-FGSM, VNI-FGSM.

Unit tests on a tiny network (each attack reduces to MI-FGSM or NI-FGSM when its addition is
switched off), then a cross-check against torchattacks 3.5.1 on 100 CIFAR-10 test images and
resnet20. Settings map one to one (torchattacks' ``alpha`` is our ``step``, ``m`` our ``scales``,
``N`` our ``samples``); torchattacks draws VMI's neighbours from the global generator with
``uniform_`` on a tensor shaped like the images, we from the attack's own generator with the same
draws, so after ``torch.manual_seed(seed)`` the two sample the same neighbours for contiguous
images (torchattacks also draws a discarded normal tensor first, which the test switches off).
"""

from __future__ import annotations

import json

import pytest
import torch

from advkit.attacks import MIFGSM, NIFGSM, SINIFGSM, VMIFGSM, VNIFGSM
from advkit.attacks.nifgsm import nesterov_point
from tests.attacks.test_transfer_baselines import _images, _success

ALL = (NIFGSM, SINIFGSM, VMIFGSM, VNIFGSM)
FAST = {"samples": 3}  # keep the variance attacks' unit tests quick


def _make(cls, model, **kwargs):
    extra = FAST if cls in (VMIFGSM, VNIFGSM) else {}
    return cls(model, **{**extra, **kwargs})


@pytest.mark.parametrize("cls", ALL)
def test_stays_in_ball_and_range_with_per_sample_eps(tiny, cls):
    x = _images()
    y = torch.arange(6) % 4
    eps = torch.tensor([1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2])
    adv = _make(cls, tiny, steps=4)(x, y, eps=eps)
    linf = (adv - x).abs().amax((1, 2, 3))
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert torch.all(linf <= eps + 1e-7) and adv.min() >= 0 and adv.max() <= 1
    assert torch.all(linf >= eps / 4 * 0.999)  # every sample moved on its own scale


@pytest.mark.parametrize("cls", ALL)
def test_per_sample_eps_equals_scalar_runs(tiny, cls):
    """Row i of a mixed-eps batch is row i of the batch attacked at the scalar eps_i (same seed)."""
    x = _images(4)
    y = torch.tensor([0, 1, 2, 3])
    eps = torch.tensor([0.01, 0.03, 0.05, 0.1])
    mixed = _make(cls, tiny, steps=4)(x, y, eps=eps)
    for i, e in enumerate(eps.tolist()):
        torch.testing.assert_close(mixed[i], _make(cls, tiny, steps=4)(x, y, eps=e)[i], atol=1e-6, rtol=0)


def test_nesterov_point_looks_ahead_along_the_momentum():
    x = torch.zeros(2, 1, 2, 2)
    momentum = torch.stack([torch.full((1, 2, 2), 2.0), torch.full((1, 2, 2), -1.0)])
    step = torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)
    out = nesterov_point(x, momentum, step, decay=0.5)
    torch.testing.assert_close(out[0], torch.full((1, 2, 2), 0.1))
    torch.testing.assert_close(out[1], torch.full((1, 2, 2), -0.1))


def test_reductions_to_mifgsm_and_nifgsm(tiny):
    """Each addition switched off gives the attack it extends, exactly."""
    x = _images(4)
    y = torch.tensor([0, 1, 2, 3])
    kw = {"eps": 0.05, "steps": 5}
    mi = MIFGSM(tiny, **kw)(x, y)
    ni = NIFGSM(tiny, **kw)(x, y)
    assert not torch.equal(ni, mi)  # the look-ahead changes the path
    # no momentum: nothing to look ahead along
    assert torch.equal(NIFGSM(tiny, decay=0.0, **kw)(x, y), MIFGSM(tiny, decay=0.0, **kw)(x, y))
    # one scale: SI-NI is NI
    assert torch.equal(SINIFGSM(tiny, scales=1, **kw)(x, y), ni)
    assert not torch.equal(SINIFGSM(tiny, scales=3, **kw)(x, y), ni)
    # one neighbour at distance 0: the variance is exactly zero
    assert torch.equal(VMIFGSM(tiny, samples=1, beta=0.0, **kw)(x, y), mi)
    # (VNI's variance is the neighbours' mean around x minus the look-ahead gradient, so it does not vanish)
    assert not torch.equal(VMIFGSM(tiny, samples=3, **kw)(x, y), mi)


def test_scale_invariant_gradient_is_the_mean_over_scaled_copies(tiny):
    x = _images(2)
    y = torch.tensor([0, 3])
    attack = SINIFGSM(tiny, scales=3)
    xg = x.clone().requires_grad_(True)
    loss = sum(torch.nn.functional.cross_entropy(tiny(xg / 2**i), y, reduction="sum") for i in range(3))
    (expected,) = torch.autograd.grad(loss / 3, xg)
    torch.testing.assert_close(attack.loss_gradient(x, y), expected)


def test_gradient_variance_is_neighbour_mean_minus_gradient(tiny):
    x = _images(2)
    y = torch.tensor([0, 3])
    eps = torch.tensor([0.02, 0.05]).view(2, 1, 1, 1)
    attack = VMIFGSM(tiny, samples=4, beta=1.5, seed=7)
    grad = attack.step_gradient(x, y)
    variance = attack.gradient_variance(x, y, grad, eps)
    g = torch.Generator().manual_seed(7)
    total = torch.zeros_like(x)
    for _ in range(4):
        noise = (torch.rand(x.shape, generator=g) * 2 - 1) * 1.5 * eps
        assert torch.all(noise.abs().amax((1, 2, 3)) <= 1.5 * eps.flatten())
        total += attack.step_gradient(x + noise, y)
    torch.testing.assert_close(variance, total / 4 - grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [VMIFGSM, VNIFGSM])
def test_variance_attacks_are_deterministic_given_seed(tiny, cls):
    x = _images(4)
    y = torch.tensor([0, 1, 2, 3])
    a = cls(tiny, eps=0.05, steps=3, samples=2, seed=5)(x, y)
    assert torch.equal(a, cls(tiny, eps=0.05, steps=3, samples=2, seed=5)(x, y))
    attack = cls(tiny, eps=0.05, steps=3, samples=2, seed=5)
    first, second = attack(x, y), attack(x, y)  # the generator advances with every call
    assert torch.equal(first, a) and not torch.equal(first, second)
    assert not torch.equal(a, cls(tiny, eps=0.05, steps=3, samples=2, seed=6)(x, y))


def test_targeted_mode_descends_the_targets_loss(tiny):
    """Targeted: the target's cross-entropy falls; untargeted: the label's rises."""
    x = _images(6)
    with torch.no_grad():
        pred = tiny(x).argmax(1)
    targets = (pred + 1) % 4

    def ce(images, labels):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(tiny(images), labels, reduction="none")

    for cls in ALL:
        toward = _make(cls, tiny, eps=0.1, steps=5, targeted=True)(x, targets)
        away = _make(cls, tiny, eps=0.1, steps=5)(x, pred)
        assert torch.all(ce(toward, targets) < ce(x, targets)), cls.name
        assert torch.all(ce(away, pred) > ce(x, pred)), cls.name


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="scales"):
        SINIFGSM(tiny, scales=0)
    with pytest.raises(ValueError, match="samples"):
        VMIFGSM(tiny, samples=0)
    with pytest.raises(ValueError, match="beta"):
        VNIFGSM(tiny, beta=-1.0)
    with pytest.raises(ValueError, match="eot_samples"):
        NIFGSM(tiny, eot_samples=2)


def test_configs(tiny):
    cfgs = {cls.name: cls(tiny).config() for cls in ALL}
    json.dumps(cfgs)
    for c in cfgs.values():
        assert c["eps"] == pytest.approx(8 / 255) and c["steps"] == 10 and c["decay"] == 1.0 and c["norm"] == "linf"
    assert cfgs["sinifgsm"]["scales"] == 5
    for name in ("vmifgsm", "vnifgsm"):
        assert cfgs[name]["samples"] == 20 and cfgs[name]["beta"] == 1.5 and cfgs[name]["seed"] == 0


# ---------------------------------------------------------------- cross-check with torchattacks

# (name, steps, extra settings): NI at the full 10 steps; SI and VT at 5 steps with 3 copies or
# neighbours, which keeps the check to seconds and still runs every part of each algorithm.
CASES = [("nifgsm", 10, {}), ("sinifgsm", 5, {"scales": 3}), ("vmifgsm", 5, {"samples": 3}),
         ("vnifgsm", 5, {"samples": 3})]
OURS = {"nifgsm": NIFGSM, "sinifgsm": SINIFGSM, "vmifgsm": VMIFGSM, "vnifgsm": VNIFGSM}


def _theirs(torchattacks, name, model, eps, steps, extra):
    common = {"eps": eps, "alpha": eps / steps, "steps": steps, "decay": 1.0}
    if name == "nifgsm":
        return torchattacks.NIFGSM(model, **common)
    if name == "sinifgsm":
        return torchattacks.SINIFGSM(model, m=extra["scales"], **common)
    cls = torchattacks.VMIFGSM if name == "vmifgsm" else torchattacks.VNIFGSM
    return cls(model, N=extra["samples"], beta=1.5, **common)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "steps", "extra"), CASES, ids=[c[0] for c in CASES])
def test_matches_torchattacks_on_cifar(cifar_setup, monkeypatch, name, steps, extra):
    """Same settings (and the same neighbours) → the same success within 2 points and ≥ 99 % equal pixels."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, pred = cifar_setup
    # every other image (50): the check is per pixel, and the success rates agree as on all 100
    # torchattacks' uniform_ fills the noise in the images' memory order: contiguous
    x, pred = x[::2].contiguous(), pred[::2]
    eps = 1 / 255  # far from saturation (measured: NI 0.77, SI-NI 0.43, VMI 0.70, VNI 0.73)
    ours = OURS[name](model, eps=eps, steps=steps, **extra)(x, pred)
    # torchattacks draws torch.randn_like(images) and overwrites it with uniform_: the normal draws
    # only advance the global generator, so they are switched off to line up the uniform ones.
    monkeypatch.setattr(torch, "randn_like", torch.empty_like)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = _theirs(torchattacks, name, model, eps, steps, extra)(x, pred)
    s_ours, s_theirs = _success(model, ours, pred), _success(model, theirs, pred)
    assert abs(s_ours - s_theirs) <= 0.02, (s_ours, s_theirs)
    assert 0.3 < s_ours < 0.95, s_ours
    assert (ours - x).abs().max() <= eps + 1e-6
    agree = ((ours - theirs).abs() <= 1e-6).float().mean().item()
    assert agree >= 0.99, agree

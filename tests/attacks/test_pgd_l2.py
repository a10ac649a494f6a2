"""L2 PGD: the ball, the start, and a cross-check with torchattacks' PGDL2 on CIFAR-10."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import PGD, PGDL2, random_targets
from advkit.models import create_classifier


def _l2(x):
    return x.flatten(1).norm(dim=1)


def test_stays_in_the_l2_ball_and_range_with_per_sample_eps(tiny):
    x = torch.rand(5, 3, 9, 7)
    eps = torch.tensor([0.0, 0.01, 0.3, 1.0, 4.0])  # an L2 radius may exceed 1
    adv = PGDL2(tiny, steps=5, rel_step=0.5)(x, torch.arange(5) % 4, eps=eps)
    assert (_l2(adv - x) <= eps + 1e-5).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv[0], x[0])
    assert (_l2(adv - x)[2:4] > 0.5 * eps[2:4]).all()  # the steps move: not stuck at the start
    with pytest.raises(ValueError, match="eps must lie in"):
        PGDL2(tiny)(x, eps=-1.0)


def test_random_start_is_inside_the_ball_and_seeded(tiny):
    attack = PGDL2(tiny, seed=3)
    starts = attack.draw_start(torch.Size((200, 3, 4, 4)))
    norms = _l2(starts)
    assert (norms <= 1 + 1e-6).all() and norms.min() < 0.2 and norms.max() > 0.8  # radius ~ U(0, 1)
    assert torch.equal(PGDL2(tiny, seed=3).draw_start(torch.Size((200, 3, 4, 4))), starts)
    # an explicit init is the start: with a tiny step the result stays next to x + eps·init
    x = torch.rand(2, 3, 8, 8) * 0.5 + 0.25
    init = starts[:2, :, :, :].repeat(1, 1, 2, 2)
    init = init / _l2(init).view(-1, 1, 1, 1) * 0.5
    adv = PGDL2(tiny, eps=0.2, steps=1, step=1e-6)(x, eps=0.2, init=init)
    torch.testing.assert_close(adv, x + 0.2 * init, atol=2e-6, rtol=0)


def test_step_is_the_normalized_gradient(tiny):
    x = torch.rand(3, 3, 8, 8) * 0.5 + 0.25
    y = torch.tensor([0, 1, 2])
    adv = PGDL2(tiny, eps=1.0, steps=1, step=0.05, random_start=False)(x, y)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(tiny(xg), y, reduction="sum"), xg)
    expected = x + 0.05 * grad / _l2(grad).view(-1, 1, 1, 1)
    torch.testing.assert_close(adv, expected.clamp(0, 1), atol=1e-6, rtol=0)
    assert PGDL2(tiny).config()["norm"] == "l2" and PGD(tiny).config()["norm"] == "linf"


@pytest.fixture(scope="module")
def cifar_setup(cifar_first_100, weights_dir):
    x, y = cifar_first_100
    return create_classifier("resnet20"), x.contiguous(), y  # torchattacks' PGDL2 views its input


def _success(model, adv, y, targeted=False):
    with torch.no_grad():
        hit = model(adv).argmax(1) == y
    return (hit if targeted else ~hit).float().mean().item()


def test_equals_torchattacks_pgdl2_without_random_start(cifar_setup):
    """The same steps as torchattacks' PGDL2 wherever its ``+ 1e-10`` on the norm of the batch-mean
    loss's gradient does not bite. On a confident image that norm is 1e-12..1e-10, their step
    shrinks and the two part; ours normalizes the gradient itself."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = cifar_setup
    eps, steps = 0.1, 10
    ours = PGDL2(model, eps=eps, steps=steps, rel_step=0.2, random_start=False)(x, y)
    theirs = torchattacks.PGDL2(model, eps=eps, alpha=0.2 * eps, steps=steps, random_start=False)(x, y)
    s_ours, s_theirs = _success(model, ours, y), _success(model, theirs, y)
    assert abs(s_ours - s_theirs) <= 0.02, (s_ours, s_theirs)
    assert 0.2 < s_ours < 0.97, s_ours  # neither trivial nor saturated at this radius
    assert (_l2(ours - x) <= eps + 1e-5).all()
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), xg)  # their loss: the mean
    unaffected = _l2(grad) >= 1e-5
    assert unaffected.sum() >= 30
    assert (_l2(ours - theirs)[unaffected] <= 1e-2 * eps).all()


def test_matches_torchattacks_pgdl2_success_with_random_start_and_targets(cifar_setup):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = cifar_setup
    eps, steps = 0.1, 10
    ours = PGDL2(model, eps=eps, steps=steps)(x, y)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGDL2(model, eps=eps, alpha=0.2 * eps, steps=steps)(x, y)
    assert abs(_success(model, ours, y) - _success(model, theirs, y)) <= 0.05
    targets = random_targets(y, 10, torch.Generator().manual_seed(0))
    big = 0.2  # (at 0.5 both reach 99 %: any attack near saturation would pass)
    ours_t = PGDL2(model, eps=big, steps=steps, targeted=True)(x, targets)
    theirs_attack = torchattacks.PGDL2(model, eps=big, alpha=0.2 * big, steps=steps)
    theirs_attack.set_mode_targeted_by_label(quiet=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs_t = theirs_attack(x, targets)
    hit_ours, hit_theirs = _success(model, ours_t, targets, True), _success(model, theirs_t, targets, True)
    assert abs(hit_ours - hit_theirs) <= 0.05, (hit_ours, hit_theirs)
    assert 0.2 < hit_ours < 0.97, hit_ours  # 0.65 measured

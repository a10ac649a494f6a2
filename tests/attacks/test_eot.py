"""Expectation over Transformation: gradients averaged over a randomized model's draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks import APGD, FGSM, PGD, PGDL2, TIFGSM, AutoAttack, Square
from advkit.defenses import create_defense

P_KEEP = 0.7


class SignFlip(nn.Module):
    """Mirrors each image about 0.5 with probability 1 − ``p_keep``, drawn anew every call from
    torch's global generator: a randomized defense whose single-draw gradient points the wrong
    way 30 % of the time."""

    def __init__(self, p_keep: float = P_KEEP) -> None:
        super().__init__()
        self.p_keep = p_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p_keep
        return (x - 0.5) * (keep.to(x.dtype) * 2 - 1) + 0.5


@pytest.fixture(scope="module")
def flip_problem():
    """(linear model, randomized model = linear ∘ SignFlip, images away from the box, labels)."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()
    g = torch.Generator().manual_seed(1)
    x0 = 0.3 + 0.4 * torch.rand(64, 3, 4, 4, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    return linear, nn.Sequential(SignFlip(), linear).eval(), x0, y


def expected_loss(linear: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) the exact expectation of the cross-entropy over SignFlip's two outcomes."""
    return (P_KEEP * F.cross_entropy(linear(x), y, reduction="none")
            + (1 - P_KEEP) * F.cross_entropy(linear(1 - x), y, reduction="none"))


def pgd_on_expected_loss(linear, x0, y, eps: float, steps: int, step: float) -> torch.Tensor:
    """L∞ PGD (no random start) on the exact expected loss: what EOT estimates."""
    x = x0.clone()
    for _ in range(steps):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(expected_loss(linear, xr, y).sum(), xr)
        x = torch.minimum(torch.maximum(x + step * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return x


def test_eot_pgd_follows_the_expected_loss_where_one_draw_does_not(flip_problem):
    linear, randomized, x0, y = flip_problem
    eps, steps, rel_step = 0.1, 10, 0.25
    reference = pgd_on_expected_loss(linear, x0, y, eps, steps, rel_step * eps)
    adv = {}
    for eot in (1, 32):
        torch.manual_seed(0)
        adv[eot] = PGD(randomized, eps=eps, steps=steps, rel_step=rel_step, random_start=False, eot_samples=eot)(x0, y)
    with torch.no_grad():
        target = expected_loss(linear, reference, y).mean().item()
        reached = {eot: expected_loss(linear, a, y).mean().item() for eot, a in adv.items()}
    # 32 draws per step give the exact expected gradient's sign: the same path as the reference
    assert (adv[32] == reference).float().mean().item() >= 0.99
    assert reached[32] >= target - 1e-4
    # one draw per step walks the wrong way about 30 % of the time
    assert (adv[1] == reference).float().mean().item() < 0.6
    assert reached[1] < target - 0.02, (reached, target)


def test_eot_apgd_ascends_the_expected_loss_further(flip_problem):
    linear, randomized, x0, y = flip_problem
    reached = {}
    for eot in (1, 32):
        torch.manual_seed(0)
        adv = APGD(randomized, eps=0.1, steps=10, eot_samples=eot, seed=0)(x0, y)
        assert (adv - x0).abs().max() <= 0.1 + 1e-6
        with torch.no_grad():
            reached[eot] = expected_loss(linear, adv, y).mean().item()
    assert reached[32] > reached[1] + 0.02, reached


def test_expected_gradient_is_the_mean_of_the_draws(tiny):
    """The EOT gradient, loss and logits are the means of as many separate passes under the same draws."""
    model = nn.Sequential(create_defense("gaussian", sigma=0.1), tiny).eval()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    y = torch.tensor([0, 1, 2, 3, 0])
    attack = PGD(model, eot_samples=4)
    torch.manual_seed(3)
    grad, loss, logits = attack.expected_gradient(x, y)
    torch.manual_seed(3)
    grads, losses, all_logits = [], [], []
    for _ in range(4):
        xr = x.clone().requires_grad_(True)
        out = model(xr)
        per_image = F.cross_entropy(out, y, reduction="none")
        grads.append(torch.autograd.grad(per_image.sum(), xr)[0])
        losses.append(per_image.detach())
        all_logits.append(out.detach())
    torch.testing.assert_close(grad, torch.stack(grads).mean(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss, torch.stack(losses).mean(0))
    torch.testing.assert_close(logits, torch.stack(all_logits).mean(0))
    assert not torch.allclose(grads[0], grads[1])  # the draws do differ


@pytest.mark.parametrize("make", [
    lambda m, k: PGD(m, eps=0.05, steps=4, eot_samples=k),
    lambda m, k: PGDL2(m, eps=0.5, steps=4, eot_samples=k),
    lambda m, k: FGSM(m, eps=0.05, eot_samples=k),
    lambda m, k: TIFGSM(m, eps=0.05, eot_samples=k),
    lambda m, k: APGD(m, eps=0.05, steps=4, eot_samples=k),
    lambda m, k: APGD(m, eps=0.05, steps=4, loss="dlr", eot_samples=k),
], ids=["pgd", "pgd-l2", "fgsm", "ti-fgsm", "apgd-ce", "apgd-dlr"])
def test_eot_on_a_deterministic_model_is_the_plain_attack(tiny, make):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(make(tiny, 3)(x, y), make(tiny, 1)(x, y), rtol=0, atol=1e-6)
    assert make(tiny, 3).config()["eot_samples"] == 3
    assert "eot_samples" not in make(tiny, 1).config()


def test_eot_is_refused_where_an_attack_does_not_average_gradients(tiny):
    with pytest.raises(ValueError, match="takes no eot_samples"):
        Square(tiny, eot_samples=2)
    with pytest.raises(ValueError, match="eot_samples must be >= 1"):
        PGD(tiny, eot_samples=0)


def test_autoattack_rand_is_apgd_ce_and_dlr_with_20_draws(tiny):
    attack = AutoAttack(tiny, eps=0.05, version="rand", steps=3)
    assert [(a.config()["loss"], a.eot_samples) for a in attack.attacks] == [("ce", 20), ("dlr", 20)]
    assert [a.eot_samples for a in AutoAttack(tiny, steps=3).attacks[:2]] == [1, 1]
    # early stop at the mean logits' first success would leave images a single draw still gets right
    assert [a.early_stop for a in attack.attacks] == [False, False]
    assert [a.early_stop for a in AutoAttack(tiny, version="fast", steps=3).attacks] == [True, True]
    randomized = nn.Sequential(create_defense("gaussian", sigma=0.05), tiny).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rand = AutoAttack(randomized, eps=0.05, version="rand", steps=3, eot_samples=2)
    torch.manual_seed(0)
    adv = rand(x, torch.tensor([0, 1, 2, 3]))
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert [name for name, _ in rand.history] == ["clean", "apgd-ce", "apgd-dlr"]


def test_eot_pgd_equals_torchattacks_eotpgd(resnet20_cifar):
    """torchattacks' EOTPGD runs the same algorithm: from the same generator state, without a random
    start, both see the same noise draws and take the same steps (resnet20 behind σ = 0.02 noise)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = resnet20_cifar
    x, y = x[::5], y[::5]
    randomized = nn.Sequential(create_defense("gaussian:sigma=0.02"), model).eval()
    eps, steps, eot = 3e-3, 5, 3
    torch.manual_seed(0)
    ours = PGD(randomized, eps=eps, steps=steps, step=eps / 4, random_start=False, eot_samples=eot)(x, y)
    torch.manual_seed(0)
    with torch.no_grad():  # advkit's label check runs the model on one image first: the same draw here
        randomized(x[:1])
    theirs = torchattacks.EOTPGD(randomized, eps=eps, alpha=eps / 4, steps=steps, eot_iter=eot,
                                 random_start=False)(x, y)
    assert (ours - theirs).abs().max() <= 1e-6
    assert (ours - x).abs().amax() > 0.9 * eps

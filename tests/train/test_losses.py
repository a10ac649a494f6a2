from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.train import fusion_loss


class _Linear(nn.Module):
    """A fixed linear 'classifier' on 2×2 images: logits = W · flatten(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 12, generator=torch.Generator().manual_seed(0)) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_fusion_losses_against_their_definitions():
    clf = _Linear()
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(8, 3, 2, 2, generator=g)
    denoised = torch.rand(8, 3, 2, 2, generator=g) * 1.6 - 0.3  # partly outside [0, 1]
    target = clf(clean).argmax(1)
    ce = fusion_loss(clf, denoised, clean, "ce")
    torch.testing.assert_close(ce, F.cross_entropy(clf(denoised), target))
    error = fusion_loss(clf, denoised, clean, "error")
    probs = torch.softmax(clf(denoised.clamp(0, 1)), 1)
    expected = 1 - probs[torch.arange(8), target].mean()
    torch.testing.assert_close(error, expected)
    assert 0 <= error <= 1


def test_error_loss_is_bounded_where_cross_entropy_is_not():
    """A confidently wrong image costs CE without bound but at most 1 in the error loss."""
    clf = _Linear()
    clean = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    target = int(clf(clean).argmax(1))
    wrong_dir = (clf.weight[(target + 1) % 4] - clf.weight[target]).detach().reshape(1, 3, 2, 2)
    confident_wrong = clean + 50 * wrong_dir
    assert fusion_loss(clf, confident_wrong, clean, "ce") > 20
    assert fusion_loss(clf, confident_wrong, clean, "error") <= 1


def test_unknown_fusion_loss():
    with pytest.raises(ValueError, match="ce, error"):
        fusion_loss(_Linear(), torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2), "mse")


def test_choice_loss_against_its_definition():
    from advkit.train import fusion_choice_loss

    clf = _Linear()
    g = torch.Generator().manual_seed(3)
    clean, sl, m = (torch.rand(6, 3, 2, 2, generator=g) for _ in range(3))
    weight = torch.rand(6, 1, 2, 2, generator=g) * 0.98 + 0.01
    y = clf(clean).argmax(1)
    p_sl = torch.softmax(clf(sl), 1)[torch.arange(6), y]
    p_m = torch.softmax(clf(m), 1)[torch.arange(6), y]
    expected = torch.stack([
        (p_sl[i] - p_m[i]).abs() * -(torch.log(weight[i]) if p_sl[i] >= p_m[i] else torch.log(1 - weight[i])).mean()
        for i in range(6)
    ]).mean()
    torch.testing.assert_close(fusion_choice_loss(clf, sl, m, weight, clean), expected)


def test_choice_loss_moves_w_where_the_error_loss_cannot():
    """φ_sl confidently wrong, φ_m right, W ≈ 1 (all φ_sl): the error loss of the mix has (almost) no
    gradient w.r.t. W; the choice loss pushes W down."""
    from advkit.train import fusion_choice_loss

    clf = _Linear()
    clean = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    y = int(clf(clean).argmax(1))
    wrong_dir = (clf.weight[(y + 1) % 4] - clf.weight[y]).detach().reshape(1, 3, 2, 2)
    sl = (clean + 5 * wrong_dir).clamp(0, 1)
    m = clean
    assert torch.softmax(clf(sl), 1)[0, y] < 1e-3
    logit = torch.full((1, 1, 2, 2), 4.0, requires_grad=True)  # W = sigmoid(4) ≈ 0.98
    w = torch.sigmoid(logit)
    fusion_loss(clf, w * sl + (1 - w) * m, clean, "error").backward()
    error_grad = logit.grad.abs().max().item()
    logit.grad = None
    fusion_choice_loss(clf, sl, m, torch.sigmoid(logit), clean).backward()
    assert logit.grad.min() > 0 and logit.grad.abs().max() > 100 * error_grad  # descent lowers W

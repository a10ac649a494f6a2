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

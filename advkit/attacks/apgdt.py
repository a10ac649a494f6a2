"""Targeted Auto-PGD (APGD-T, Croce & Hein 2020): APGD on the targeted DLR loss, towards each of
the classes the model ranks next to the top, one after another. AutoAttack's second attack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from advkit.attacks.apgd import APGD
from advkit.attacks.base import check_counts
from advkit.attacks.registry import register_attack
from advkit.attacks.targets import next_ranked_targets


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2), per sample, to be ascended (Croce & Hein, 2020).

    Args:
        logits: (B, C) float, C ≥ 4.
        labels: (B,) int64 true classes; targets: (B,) int64 target classes.
    Returns: (B,) float; positive once the target's logit passes the true class's.
    """
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got logits of shape {tuple(logits.shape)}")
    ordered = logits.sort(dim=1, descending=True).values
    gap = logits.gather(1, labels[:, None]).squeeze(1) - logits.gather(1, targets[:, None]).squeeze(1)
    return -gap / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


@register_attack
class APGDT(APGD):
    """APGD-T, L∞ or L2 (``norm``): untargeted in what it reports (success = any wrong class), targeted in how it
    searches: for k = 1..``n_targets`` it runs APGD on the targeted DLR loss towards the class with
    the k-th highest clean logit after the top one, on the images still not fooled.

    Args:
        model, eps, norm, steps, restarts, rho, momentum, seed, precision, channels_last: as `APGD`
            (``restarts`` per target; ``steps`` default 100 per target, as AutoAttack).
        n_targets: how many target classes to try (9: every other CIFAR-10 class, AutoAttack's
            choice; fewer is cheaper).

    ``forward(images, labels, eps=None, init=None)``: as `APGD`'s; labels (B,) true classes
    (None: the model's predictions). Returns adversarial images in [0, 1]: the first successful
    iterate where an image was fooled (images misclassified from the start come back unchanged),
    elsewhere the highest-loss point of all targets and restarts.
    """

    name = "apgd-t"
    supports_targeted = False

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_targets: int = 9,
                 **kwargs: Any) -> None:
        kwargs.setdefault("early_stop", True)
        super().__init__(model, eps=eps, steps=steps, loss="dlr", **kwargs)
        self.min_classes = 4
        check_counts(n_targets=n_targets)
        self.n_targets = n_targets

    # During the runs, labels are (B, 2): the true class and the current target.

    def sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:
            return targeted_dlr_loss(logits, labels[:, 0], labels[:, 1])
        return super().sample_loss(logits, labels)

    def succeeded(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().succeeded(logits, labels[:, 0] if labels.ndim == 2 else labels)

    def searches(
        self, labels: torch.Tensor, clean_logits: torch.Tensor, fooled: torch.Tensor
    ) -> Iterator[torch.Tensor]:
        """(B, 2) [true class, target] for each target: the class ranked k-th after the top by the
        clean logits, k = 1..``n_targets``, while any image is left to fool."""
        for targets in next_ranked_targets(clean_logits, self.n_targets, fooled):
            yield torch.stack([labels, targets], dim=1)

    def config(self) -> dict[str, Any]:
        config = {**super().config(), "loss": "dlr-targeted", "n_targets": self.n_targets}
        config.pop("targeted", None)
        return config

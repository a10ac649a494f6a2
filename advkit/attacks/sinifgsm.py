"""Scale-invariant NI-FGSM (Lin et al., ICLR 2020), L∞: NI-FGSM on gradients averaged over scaled copies."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import check_counts
from advkit.attacks.nifgsm import NIFGSM
from advkit.attacks.registry import register_attack


@register_attack
class SINIFGSM(NIFGSM):
    """SI-NI-FGSM: `NIFGSM` whose gradient is the mean over the copies x / 2^i, i = 0..m−1.

    Scale invariance: a classifier's loss changes little when an image's intensities are scaled, so
    the scaled copies act as an ensemble of models at the cost of ``scales`` gradient passes per
    step. The gradient is taken with respect to x (the chain rule's 1/2^i included), as in the
    paper's code and torchattacks' ``SINIFGSM``.

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, eps/steps).
        scales: number m of scaled copies (default 5, the paper's).
        precision, channels_last, targeted: see `Attack`.

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`.
    """

    name = "sinifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        scales: int = 5,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps=eps, steps=steps, decay=decay, step=step, **kwargs)
        check_counts(scales=scales)
        self.scales = scales

    def loss_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(images)
        for i in range(self.scales):  # one copy at a time: memory stays that of one pass
            # the chain rule's 1/2^i: exact in floating point, a power of two
            total += super().loss_gradient(images / 2**i, labels) / 2**i
        return total / self.scales

    def config(self) -> dict[str, Any]:
        return {**super().config(), "scales": self.scales}

"""Nesterov iterative FGSM (Lin et al., ICLR 2020, "Nesterov accelerated gradient and scale invariance"), L∞."""

from __future__ import annotations

import torch

from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.registry import register_attack


def nesterov_point(images: torch.Tensor, momentum: torch.Tensor, step: torch.Tensor, decay: float) -> torch.Tensor:
    """The look-ahead point x + α·μ·g where NI-FGSM takes its gradient; step α: (B, 1, 1, 1)."""
    return images + decay * step * momentum


@register_attack
class NIFGSM(MIFGSM):
    """NI-FGSM: MI-FGSM whose gradient is taken at the look-ahead point x + α·μ·g.

    Looking ahead along the accumulated momentum lets the attack "see" past the next step, which Lin
    et al. found to make the adversarial images transfer better than MI-FGSM's at equal cost.

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, step α = eps/steps as in
            the paper; torchattacks' ``NIFGSM`` defaults to α = 2/255).
        precision, channels_last, targeted: see `Attack`.

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`.
    """

    name = "nifgsm"

    def gradient_point(self, images: torch.Tensor, momentum: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return nesterov_point(images, momentum, step, self.decay)

"""Variance-tuned NI-FGSM (Wang & He, CVPR 2021), L∞."""

from __future__ import annotations

import torch

from advkit.attacks.nifgsm import nesterov_point
from advkit.attacks.registry import register_attack
from advkit.attacks.vmifgsm import VMIFGSM


@register_attack
class VNIFGSM(VMIFGSM):
    """VNI-FGSM: `VMIFGSM` whose step gradient is taken at NI-FGSM's look-ahead point x + α·μ·g.

    The neighbours are still sampled around x itself and the variance is their mean gradient minus
    the look-ahead gradient, as in torchattacks' ``VNIFGSM`` (so, unlike VMI's, it does not vanish
    at β = 0). Arguments and call as in `VMIFGSM`.
    """

    name = "vnifgsm"

    def gradient_point(self, images: torch.Tensor, momentum: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return nesterov_point(images, momentum, step, self.decay)

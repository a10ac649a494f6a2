"""Translation-invariant MI-FGSM (Dong et al., 2019), L∞ (untargeted or targeted)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.registry import register_attack
from advkit.attacks.transforms import GradientSmoothing


@register_attack
class TIMIFGSM(MIFGSM):
    """TI-MI-FGSM: MI-FGSM with each step's gradient smoothed by a Gaussian before normalization.

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, eps/steps).
        kernel_size: side of the Gaussian (default 15).
        sigma: its standard deviation in pixels (default 3, SPEC "Transfer baselines"). Dong et al.'s
            code and torchattacks' ``nsig`` is the kernel's half-width in standard deviations:
            ``nsig = 3`` there is ``sigma = (kernel_size − 1) / 6`` = 7/3 here.

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`.
    """

    name = "timifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        kernel_size: int = 15,
        sigma: float = 3.0,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps=eps, steps=steps, decay=decay, step=step, **kwargs)
        self.smoothing = GradientSmoothing(kernel_size, sigma)

    def transform_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        return self.smoothing(grad)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.smoothing.config()}

"""Translation-invariant FGSM (Dong et al., 2019), one step, L∞ (untargeted or targeted)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.fgsm import FGSM
from advkit.attacks.registry import register_attack
from advkit.attacks.transforms import GradientSmoothing


@register_attack
class TIFGSM(FGSM):
    """TI-FGSM: one step of size eps along the sign of the Gaussian-smoothed gradient, clipped to [0, 1].

    Args:
        model: classifier over [0, 1] images.
        eps: L∞ radius on the [0, 1] scale (a per-sample tensor may be passed to ``forward``).
        kernel_size, sigma: the Gaussian, as in `TIMIFGSM` (defaults 15, 3 pixels).

    ``forward(images, labels=None, eps=None, init=None)``: as `FGSM`; ``init`` is ignored.
    """

    name = "tifgsm"

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, kernel_size: int = 15, sigma: float = 3.0, **kwargs: Any
    ) -> None:
        super().__init__(model, eps=eps, **kwargs)
        self.smoothing = GradientSmoothing(kernel_size, sigma)

    def transform_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        return self.smoothing(grad)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.smoothing.config()}

"""Translation-invariant DIM (Dong et al., 2019): M-DI²-FGSM with Gaussian-smoothed gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.dim import DIM
from advkit.attacks.registry import register_attack
from advkit.attacks.transforms import GradientSmoothing


@register_attack
class TIDIM(DIM):
    """TI-DIM: `DIM` (momentum and diverse inputs) whose gradient is smoothed as in `TIMIFGSM`.

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, eps/steps).
        resize_rate, diversity_prob, seed: as in `DIM` (defaults 0.9, 0.5, 0).
        kernel_size, sigma: as in `TIMIFGSM` (defaults 15, 3 pixels).

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`.
    """

    name = "tidim"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        resize_rate: float = 0.9,
        diversity_prob: float = 0.5,
        kernel_size: int = 15,
        sigma: float = 3.0,
        seed: int = 0,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model, eps=eps, steps=steps, decay=decay, resize_rate=resize_rate, diversity_prob=diversity_prob,
            seed=seed, step=step, **kwargs,
        )
        self.smoothing = GradientSmoothing(kernel_size, sigma)

    def transform_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        return self.smoothing(grad)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.smoothing.config()}

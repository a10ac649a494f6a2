"""Translation-invariant FGSM (Dong et al., 2019), one step, L∞, untargeted."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, as_eps_tensor, check_images
from advkit.attacks.transforms import GradientSmoothing


class TIFGSM(Attack):
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
        super().__init__(model, **kwargs)
        self.eps = eps
        self.smoothing = GradientSmoothing(kernel_size, sigma)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_images(images)
        x0 = images.detach().float()
        labels = self.resolve_labels(x0, labels)
        eps_t = as_eps_tensor(self.eps if eps is None else eps, x0.shape[0], x0)
        grad, _ = self.input_gradient(x0, labels)
        return (x0 + eps_t * self.smoothing(grad).sign()).clamp(0, 1).detach()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": "linf",
            "eps": self.eps,
            **self.smoothing.config(),
            "loss": "cross_entropy",
            "targeted": False,
        }

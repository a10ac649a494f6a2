"""Fast gradient sign method (Goodfellow et al., 2015), L∞ (untargeted or targeted)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack
from advkit.attacks.registry import register_attack


@register_attack
class FGSM(Attack):
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1].

    ``forward(images, labels, eps=None)``: eps a scalar or (B,) tensor.

    Subclasses change the step through ``transform_gradient`` (TI-FGSM's smoothing, applied before
    the sign).
    """

    name = "fgsm"
    supports_eot = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.eps = eps

    def transform_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """The raw input gradient before its sign is taken (identity here)."""
        return grad

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        grad, _ = self.input_gradient(x0, labels)
        return (x0 + eps_t * self.transform_gradient(grad).sign()).clamp(0, 1).detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "linf", "eps": self.eps, "loss": "cross_entropy"}

"""Fast gradient sign method (Goodfellow et al., 2015), L∞, untargeted."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, as_eps_tensor, check_images


class FGSM(Attack):
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1].

    ``forward(images, labels, eps=None)``: eps a scalar or (B,) tensor.
    """

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.eps = eps

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
        return (x0 + eps_t * grad.sign()).clamp(0, 1).detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "linf", "eps": self.eps, "loss": "cross_entropy", "targeted": False}

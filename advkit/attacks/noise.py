"""Gaussian noise "attack": the noisy/clean pairs a kernel-prediction denoiser trains on (Pasadena)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, as_eps_tensor, check_images
from advkit.attacks.registry import register_attack


@register_attack
class GaussianNoise(Attack):
    """``clip(images + sigma · N(0, 1), 0, 1)``; ignores labels and gradients.

    ``forward(images, labels=None, eps=None, init=None)``: ``eps`` (if given) overrides sigma per
    sample; ``init`` is an optional (B, C, H, W) tensor of standard-normal draws.
    """

    name = "noise"
    threat_norms = ()
    supports_targeted = False

    def __init__(self, model: nn.Module | None = None, sigma: float = 0.1, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(model if model is not None else nn.Identity(), **kwargs)
        if not 0.0 <= sigma <= 1.0:  # also NaN
            raise ValueError(f"sigma must lie in [0, 1] on the [0, 1] pixel scale (25/255, not 25), got {sigma}")
        self.sigma = sigma
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_images(images)
        x0 = images.detach().float()
        sigma = as_eps_tensor(self.sigma if eps is None else eps, x0.shape[0], x0)
        if init is None:
            init = torch.randn(x0.shape, generator=self._generator)
        return (x0 + sigma * init.to(x0.device, torch.float32)).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "distribution": "normal", "clip": [0, 1]}

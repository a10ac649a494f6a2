"""Variance-tuned MI-FGSM (Wang & He, CVPR 2021, "Enhancing the transferability of adversarial attacks
through variance tuning"), L∞."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import DeviceGenerators, check_counts
from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.registry import register_attack


@register_attack
class VMIFGSM(MIFGSM):
    """VMI-FGSM: MI-FGSM whose gradient at step t+1 is corrected by the gradient variance at step t.

    After each step's gradient g(x_t), ``samples`` neighbours x_t + U(−β·ε, β·ε)^d are drawn and
    v = mean of their gradients − g(x_t); the next step normalizes g(x_{t+1}) + v. The correction
    pulls the update towards the neighbourhood's average gradient, which stabilizes the direction
    and improves transfer (the neighbours are not clipped to [0, 1], as in the paper's code and
    torchattacks' ``VMIFGSM``). Costs 1 + ``samples`` gradient passes per step (the last step
    skips its sampling: no step follows to use it).

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, eps/steps).
        samples: neighbours N per step (default 20, the paper's; torchattacks' default is 5).
        beta: neighbourhood radius as a multiple of eps (default 1.5, the paper's and torchattacks').
        seed: seeds the attack's own generator for the neighbours (one per device it runs on); it
            advances with every call, so two attacks built with the same seed give the same results
            call for call.
        precision, channels_last, targeted: see `Attack`.

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`; eps may be per sample
    (each image's neighbourhood scales with its own radius).
    """

    name = "vmifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        samples: int = 20,
        beta: float = 1.5,
        seed: int = 0,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps=eps, steps=steps, decay=decay, step=step, **kwargs)
        check_counts(samples=samples)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.samples = samples
        self.beta = beta
        self.seed = seed
        self._generators = DeviceGenerators(seed)

    def gradient_variance(
        self, images: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        radius = self.beta * eps
        generator = self._generators(images.device)
        total = torch.zeros_like(images)
        for _ in range(self.samples):
            # U(−r, r) as −r + 2r·U(0, 1): torch's uniform_(−r, r) from the same draws, up to rounding
            unit = torch.rand(images.shape, generator=generator, device=images.device)
            total += self.step_gradient(images + (-radius + 2 * radius * unit), labels)
        return total / self.samples - grad

    def config(self) -> dict[str, Any]:
        return {**super().config(), "samples": self.samples, "beta": self.beta, "seed": self.seed}

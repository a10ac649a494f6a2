"""Momentum iterative FGSM (Dong et al., 2018), L∞ (untargeted or targeted); the loop DIM and the TI variants share."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, as_eps_tensor, check_counts, check_positive
from advkit.attacks.registry import register_attack


def normalize_mean_abs(grad: torch.Tensor) -> torch.Tensor:
    """Each sample of ``grad`` (B, ...) divided by its mean absolute value (all-zero samples stay 0).

    Dong et al. divide by the L1 norm; the mean differs from it by the constant C·H·W, which no
    sign of the momentum depends on, and keeps the momentum's scale independent of the image size.
    """
    scale = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
    return torch.where(scale > 0, grad / scale, torch.zeros_like(grad))


@register_attack
class MIFGSM(Attack):
    """MI-FGSM: ``steps`` signed steps on the momentum g ← μ·g + ∇/mean|∇| of the cross-entropy.

    Args:
        model: classifier over [0, 1] images.
        eps: L∞ radius on the [0, 1] scale (a per-sample tensor may be passed to ``forward``).
        steps: iterations T (default 10).
        decay: momentum decay μ (default 1.0; 0 gives I-FGSM with normalized gradients).
        step: absolute step size; None (default): eps / steps per sample, as in the paper.
        precision, channels_last: see `Attack`.

    ``forward(images, labels=None, eps=None, init=None)``: images (B, C, H, W) in [0, 1]; labels
    (B,) or None (the model's predictions); eps a scalar or (B,) tensor; ``init`` is accepted for
    the uniform call and ignored (no random start). Each step is clipped to the eps-ball around the
    input and to [0, 1]. Returns the adversarial images (B, C, H, W), float32.

    Subclasses change the loop through hooks: ``transform_input`` (DIM's diverse inputs, applied
    inside the graph), ``loss_gradient`` (SI's average over scaled copies), ``transform_gradient``
    (TI's smoothing, applied before normalization), ``gradient_point`` (NI's look-ahead) and
    ``gradient_variance`` (VT's correction, added to the next step's gradient).
    """

    name = "mifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps)
        check_positive(step=step)
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.eps = eps
        self.steps = steps
        self.decay = decay
        self.step = step

    def transform_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the model sees at each step (identity here); must keep the batch size."""
        return images

    def transform_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """The raw input gradient before normalization (identity here)."""
        return grad

    def gradient_point(self, images: torch.Tensor, momentum: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Where the step's gradient is taken (``images`` here; NI looks ahead along the momentum).
        step: (B, 1, 1, 1) step sizes."""
        return images

    def gradient_variance(
        self, images: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor | None:
        """A correction added to the next step's gradient before normalization, computed after the
        step's ``grad`` at ``images`` (None here; VT's gradient variance)."""
        return None

    def step_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gradient a step follows before normalization: `transform_gradient` of `loss_gradient`."""
        return self.transform_gradient(self.loss_gradient(images, labels))

    def loss_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∇_x of `attack_loss` (±Σ CE) of model(transform_input(x)) at ``images`` (detached), float32."""
        x = images.detach().requires_grad_(True)
        logits = self.logits(self.transform_input(x))
        (grad,) = torch.autograd.grad(self.attack_loss(logits, labels), x)
        return grad

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        b = x0.shape[0]
        # eps / steps in float64 then rounded once, as a Python-float step would be.
        eps_raw = self.eps if eps is None else eps
        step_t = as_eps_tensor(
            torch.as_tensor(eps_raw, dtype=torch.float64) / self.steps if self.step is None else self.step, b, x0
        )
        x = x0.clone()
        momentum = torch.zeros_like(x0)
        variance: torch.Tensor | None = None
        for t in range(self.steps):
            grad = self.step_gradient(self.gradient_point(x, momentum, step_t), labels)
            tuned = grad if variance is None else grad + variance
            momentum = self.decay * momentum + normalize_mean_abs(tuned)
            if t + 1 < self.steps:  # the last step's variance would correct nothing
                variance = self.gradient_variance(x, labels, grad, eps_t)
            moved = x + step_t * momentum.sign()
            x = (x0 + torch.clamp(moved - x0, -eps_t, eps_t)).clamp(0, 1)
        return x.detach()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": "linf",
            "eps": self.eps,
            "steps": self.steps,
            "step": self.step,
            "decay": self.decay,
            "gradient_normalization": "mean_abs",
            "loss": "cross_entropy",
        }

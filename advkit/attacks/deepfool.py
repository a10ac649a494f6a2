"""DeepFool (Moosavi-Dezfooli et al., 2016): a minimum-norm attack by repeated linearization.

Each step linearizes the classifier at the current point and steps onto the nearest linearized
boundary; the steps add up, and the image is the clean one plus the sum, enlarged by a small
overshoot, until the prediction changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, check_counts
from advkit.attacks.boundary import nearest_boundary
from advkit.attacks.registry import register_attack

@register_attack
class DeepFool(Attack):
    """DeepFool, L2 (the paper's) or L∞.

    Args:
        model: classifier over [0, 1] images.
        steps: the most linearizations per image (50, torchattacks'; most images need 2–4).
        overshoot: the summed step is enlarged by 1 + ``overshoot`` (0.02) so the point lands past
            the boundary, not on it.
        norm: ``l2`` (step along ∇(f_l − f_y), nearest boundary by the L2 norm) or ``linf`` (step
            along its sign, nearest by the L1 norm of the gradient).
        precision, channels_last: as `Attack`.

    One forward and K + 1 backward passes per step for a K-class model, on the images not yet
    fooled.

    ``forward(images, labels=None)``: images (B, C, H, W) in [0, 1], labels (B,) true classes
    (None: the model's predictions). Returns (B, C, H, W) in [0, 1]: the first point that changes
    the prediction, the clean image where ``steps`` did not suffice (as `FAB` and `CW`; torchattacks
    returns the last point). After a call, ``norms`` (B,) holds each returned adversarial's
    distance in ``norm`` (0 for images misclassified from the start, inf where none was found).
    """

    name = "deepfool"
    threat_norms = ("l2", "linf")
    minimum_norm = True
    supports_targeted = False

    def __init__(self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, norm: str = "l2",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps)
        if not overshoot >= 0:
            raise ValueError(f"overshoot must be >= 0, got {overshoot}")
        self.set_norm(norm)
        self.steps, self.overshoot = steps, overshoot
        self.norms = torch.empty(0)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x0, labels = self.prepare_batch(images, labels)
        n = x0.shape[0]
        out, x = x0.clone(), x0.clone()
        total = torch.zeros_like(x0)  # the summed steps
        fooled = torch.zeros(n, dtype=torch.bool, device=x0.device)
        active = torch.arange(n, device=x0.device)
        dual_p = 2.0 if self.norm == "l2" else 1.0
        # step 0 only checks the clean images; each later one first checks the point it reached
        for step in range(self.steps + 1):
            xa = x[active].requires_grad_(True)
            logits = self.logits(xa)
            hit = self.succeeded(logits.detach(), labels[active])
            out[active[hit]] = xa.detach()[hit]
            fooled[active[hit]] = True
            if bool(hit.all()) or step == self.steps:
                break
            # rows fooled just now ride along in this backward (no second forward); their gradients are dropped
            gap, grad = nearest_boundary(xa, logits, labels[active], None, dual_p)
            gap, grad, active = gap[~hit], grad[~hit], active[~hit]
            size = gap.abs() + 1e-4  # the paper's small push past the linearized boundary
            if self.norm == "l2":
                move = grad * (size / grad.flatten(1).pow(2).sum(1).clamp_min(1e-24)).view(-1, 1, 1, 1)
            else:
                move = grad.sign() * (size / grad.flatten(1).abs().sum(1).clamp_min(1e-12)).view(-1, 1, 1, 1)
            total[active] += move
            x[active] = (x0[active] + (1 + self.overshoot) * total[active]).clamp(0, 1)
        norms = torch.full((n,), math.inf, device=x0.device)
        norms[fooled] = self.distance(out[fooled] - x0[fooled])
        self.norms = norms
        return out.detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": self.norm, "steps": self.steps, "overshoot": self.overshoot}

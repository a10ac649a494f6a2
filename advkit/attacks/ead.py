"""EAD, the elastic-net attack (Chen et al., AAAI 2018): a minimum-L1 attack by optimization.

It minimizes c · f(x') + β‖x' − x‖₁ + ‖x' − x‖²₂ over the box [0, 1] with FISTA: a gradient step
on the smooth part c · f + ‖·‖²₂, then the projected shrinkage that handles the L1 term and the
box exactly; f is CW's margin max(z_y − max_{j≠y} z_j, −κ). A per-image binary search over c, as
in `CW`. The L1 term makes the perturbation sparse: few pixels, changed a lot.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, check_counts
from advkit.attacks.cw import cw_margin, search_over_c
from advkit.attacks.registry import register_attack

DECISIONS = ("l1", "en")


def shrink(z: torch.Tensor, x0: torch.Tensor, beta: float) -> torch.Tensor:
    """EAD's projected shrinkage S_β: each pixel of ``z`` moved β towards ``x0`` (and onto it where
    it is within β), then clipped to [0, 1]. The proximal step of β‖· − x0‖₁ on the box."""
    diff = z - x0
    return torch.where(diff > beta, (z - beta).clamp(max=1), torch.where(diff < -beta, (z + beta).clamp(min=0), x0))


@register_attack
class EAD(Attack):
    """EAD, elastic-net attack (L1, minimum-norm).

    Args:
        model: classifier over [0, 1] images.
        beta: weight β of the L1 term, also the shrinkage threshold (1e-3, the paper's and
            torchattacks'; as their code, the threshold is β, not scaled by the step).
        c: starting weight of the margin term (1e-3, the paper's); searched per image.
        kappa: confidence κ: the margin an adversarial must reach (0).
        steps: FISTA iterations per search step (100; the paper uses 1000).
        lr: the step size α₀ of the gradient step, decayed as α₀ (1 − k/steps)^½ (0.01).
        binary_search_steps: searches for c per image (9): c halves towards the last failure
            where the image was fooled, and grows tenfold (or bisects) where it was not.
        decision: which adversarial iterate is best: ``l1`` (smallest L1 distance, EADL1) or
            ``en`` (smallest β‖δ‖₁ + ‖δ‖²₂, EADEN).
        abort_early: stop an image's search step when its loss has not fallen by 0.01 % over a
            tenth of the steps (per image, as `CW`).
        targeted, precision, channels_last: as `Attack`.

    ``forward(images, labels=None)``: images (B, C, H, W) in [0, 1], labels (B,) (None: the
    model's predictions; target classes when ``targeted``). Returns (B, C, H, W) in [0, 1]: the best
    adversarial found (its margin past κ), the clean image where none was. After a call ``norms``
    (B,) holds each returned image's L1 distance (inf where none was found; 0 for images already
    misclassified, which come back unchanged). Every search step restarts from the clean image,
    as the paper's code (torchattacks' carries the last iterate over).
    """

    name = "ead"
    threat_norms = ("l1",)
    minimum_norm = True

    def __init__(self, model: nn.Module, beta: float = 1e-3, c: float = 1e-3, kappa: float = 0.0, steps: int = 100,
                 lr: float = 0.01, binary_search_steps: int = 9, decision: str = "l1", abort_early: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps, binary_search_steps=binary_search_steps)
        for label, value, positive in (("beta", beta, False), ("c", c, True), ("kappa", kappa, False),
                                       ("lr", lr, True)):
            if not (value > 0 if positive else value >= 0) or not math.isfinite(value):
                raise ValueError(f"{label} must be {'> 0' if positive else '>= 0'}, got {value}")
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; use {' or '.join(DECISIONS)}")
        self.beta, self.c, self.kappa, self.steps, self.lr = beta, c, kappa, steps, lr
        self.binary_search_steps = binary_search_steps
        self.decision = decision
        self.abort_early = abort_early
        self.norms = torch.empty(0)

    def distance_cost(self, delta: torch.Tensor) -> torch.Tensor:
        """(B,) what the decision rule minimizes among adversarial iterates."""
        l1 = delta.flatten(1).abs().sum(1)
        return l1 if self.decision == "l1" else self.beta * l1 + delta.flatten(1).pow(2).sum(1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x0, labels = self.prepare_batch(images, labels)
        out, best_cost = search_over_c(self, self.search, x0, labels, self.c, self.binary_search_steps)
        self.norms = torch.where(torch.isfinite(best_cost), (out - x0).flatten(1).abs().sum(1), best_cost)
        return out.detach()

    def search(
        self, x0: torch.Tensor, labels: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One FISTA run from the clean images with per-image weights ``c`` (B,). Returns the best
        adversarial iterate per image, its decision cost (B,) (inf where none) and (B,) bool:
        whether one was found."""
        n = x0.shape[0]
        x, y = x0.clone(), x0.clone()  # the iterate and FISTA's extrapolated point
        best, best_cost = x0.clone(), torch.full((n,), math.inf, device=x0.device)
        previous = torch.full((n,), math.inf, device=x0.device)
        check_every = max(self.steps // 10, 1)
        active = torch.arange(n, device=x0.device)
        for k in range(1, self.steps + 1):
            if active.numel() == 0:
                break
            xa0, ya = x0[active], y[active].requires_grad_(True)
            margin = cw_margin(self.logits(ya), labels[active], self.targeted)
            smooth = c[active] * margin.clamp_min(-self.kappa) + (ya - xa0).flatten(1).pow(2).sum(1)
            (grad,) = torch.autograd.grad(smooth.sum(), ya)
            with torch.no_grad():
                step = self.lr * (1 - (k - 1) / self.steps) ** 0.5
                new_x = shrink(ya.detach() - step * grad, xa0, self.beta)
                y[active] = new_x + k / (k + 3) * (new_x - x[active])
                x[active] = new_x
                delta = new_x - xa0
                margin = cw_margin(self.logits(new_x), labels[active], self.targeted)
                cost = self.distance_cost(delta)
                better = (margin < -self.kappa) & (cost < best_cost[active])
                best[active[better]], best_cost[active[better]] = new_x[better], cost[better]
                if self.abort_early and k % check_every == 0:
                    l1 = delta.flatten(1).abs().sum(1)
                    loss = c[active] * margin.clamp_min(-self.kappa) + delta.flatten(1).pow(2).sum(1) + self.beta * l1
                    stalled = loss > previous[active] * 0.9999
                    previous[active] = loss
                    active = active[~stalled]
        return best, best_cost, torch.isfinite(best_cost)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "l1", "beta": self.beta, "c": self.c, "kappa": self.kappa,
                "steps": self.steps, "lr": self.lr, "binary_search_steps": self.binary_search_steps,
                "decision": self.decision, "abort_early": self.abort_early}

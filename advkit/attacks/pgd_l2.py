"""Projected gradient descent in the L2 norm (Madry et al., 2018), torchattacks' PGDL2 defaults."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.pgd import PGD
from advkit.attacks.registry import register_attack


def _per_sample_l2(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) L2 norm of each sample of ``x`` (B, ...)."""
    return x.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (x.ndim - 1)))


def _unit_l2(x: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` scaled to L2 norm 1 (all-zero samples stay 0).

    No small constant in the denominator: a confident image's gradient norm can be 1e-12 or less,
    and torchattacks' ``+ 1e-10`` then shortens its step (a difference the cross-check test shows).
    """
    norm = _per_sample_l2(x)
    return torch.where(norm > 0, x / norm, torch.zeros_like(x))


@register_attack
class PGDL2(PGD):
    """L2 PGD on the cross-entropy: steps along the normalized gradient, projection onto the L2 ball.

    Args:
        model: classifier over [0, 1] images.
        eps: L2 radius on the [0, 1] scale, over all C·H·W values of an image (default 1.0, as
            torchattacks; RobustBench's CIFAR-10 L2 threat model is 0.5). A per-sample tensor may be
            passed to ``forward``; radii above 1 are allowed here (the L2 norm of an image reaches
            √(C·H·W)).
        steps: iterations (default 10).
        rel_step: step size as a fraction of eps (default 0.2: torchattacks' alpha 0.2 at eps 1);
            ``step`` overrides it with an absolute size.
        random_start: start from a random point of the ball: a Gaussian direction at a radius
            U(0, 1)·eps (torchattacks' draw).
        early_stop, seed, targeted, precision, channels_last: as in `PGD` and `Attack`.

    ``forward(images, labels, eps=None, init=None)``: ``init`` is an optional (B, C, H, W) start
    offset in units of eps, inside the unit L2 ball. Returns images in [0, 1] with
    ‖adv − images‖₂ ≤ eps per image.
    """

    name = "pgd_l2"
    threat_norms = ("l2",)
    max_eps = float("inf")

    def __init__(
        self,
        model: nn.Module,
        eps: float = 1.0,
        steps: int = 10,
        rel_step: float = 0.2,
        step: float | None = None,
        random_start: bool = True,
        early_stop: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps=eps, steps=steps, rel_step=rel_step, step=step, random_start=random_start,
                         early_stop=early_stop, seed=seed, **kwargs)

    def draw_start(self, shape: torch.Size) -> torch.Tensor:
        direction = torch.randn(shape, generator=self._generator)
        radius = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=self._generator)
        return _unit_l2(direction) * radius

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return _unit_l2(grad)

    def project(self, x: torch.Tensor, x0: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
        delta = x - x0
        norm = _per_sample_l2(delta)
        scale = torch.where(norm > eps_t, eps_t / norm, torch.ones_like(norm))  # norm > 0 where it is used
        return (x0 + delta * scale).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "l2"}

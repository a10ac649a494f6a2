"""Projected gradient descent in the L2 norm (Madry et al., 2018), torchattacks' PGDL2 defaults."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.base import project_l2, unit_l2
from advkit.attacks.pgd import PGD
from advkit.attacks.registry import register_attack


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
        return unit_l2(direction) * radius

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return unit_l2(grad)

    project = staticmethod(project_l2)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "l2"}

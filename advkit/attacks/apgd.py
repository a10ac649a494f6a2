"""Auto-PGD, L∞ or L2 (Croce & Hein, 2020): PGD with momentum and a step size that halves itself.

The attack AutoAttack and RobustBench build on. It needs no step-size tuning: the step starts at
2·eps and is halved at checkpoints where the loss oscillated or stopped improving, each time from
the best point found so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import (
    Attack,
    check_counts,
    draw_on_unit_sphere,
    project_l2,
    project_linf,
    to_unit_sphere,
    unit_l2,
)
from advkit.attacks.registry import register_attack

LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The difference-of-logits-ratio loss (Croce & Hein, 2020), per sample, to be ascended.

    DLR = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3), with z_π the logits sorted in descending order:
    positive once the image is misclassified, and unchanged when the logits are shifted or scaled,
    which makes it robust to the logit rescaling that hides gradients from cross-entropy.

    Args:
        logits: (B, C) float, C ≥ 3.
        labels: (B,) int64 true classes.
    Returns: (B,) float.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got logits of shape {tuple(logits.shape)}")
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    # the largest other logit: the top one, unless the top one is the true class
    top_is_true = logits.argmax(1) == labels
    other = torch.where(top_is_true, ordered[:, 1], ordered[:, 0])
    return -(true - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def checkpoint_intervals(steps: int) -> list[int]:
    """Lengths of the intervals between APGD's step-size checkpoints over ``steps`` iterations.

    The first is 22 % of the run, each next one 3 % of it shorter, never under 6 % (the paper's
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), in whole iterations of at least 1).
    """
    first, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    intervals, length, total = [], first, 0
    while total + length <= steps:
        intervals.append(length)
        total += length
        length = max(length - shrink, least)
    return intervals


@register_attack
class APGD(Attack):
    """APGD on the cross-entropy (APGD-CE) or the DLR loss (APGD-DLR), L∞ or L2.

    Args:
        model: classifier over [0, 1] images.
        eps: radius in ``norm`` on the [0, 1] scale (a per-sample tensor may be passed to
            ``forward``). The default 8/255 is AutoAttack's L∞ radius for CIFAR-10; with
            ``norm="l2"`` pass one (RobustBench's CIFAR-10 L2 radius is 0.5; may exceed 1).
        norm: ``linf`` (default: signed steps, the L∞ ball) or ``l2`` (steps along the unit-L2
            gradient, the L2 ball, random starts on the L2 sphere), as AutoAttack's ``norm``.
        steps: iterations per restart (default 100, as in AutoAttack; torchattacks' APGD defaults
            to 10). Each costs one forward and backward of the images not yet fooled.
        loss: ``ce`` or ``dlr`` (DLR needs ≥ 3 classes and has no targeted mode here).
        restarts: runs from fresh random starts, each on the images still not fooled.
        rho: a checkpoint halves the step when the loss rose in at most ``rho`` of the interval's
            iterations (0.75).
        momentum: weight of the new step against the last one (0.75; the first step has none).
        early_stop: stop iterating an image at its first successful iterate, and leave images the
            model already gets wrong untouched (AutoAttack's economy; the success rate is the same,
            the perturbations are smaller). Off by default: every image runs all ``steps``. Leave it
            off with EOT on a randomized model: an image whose mean logits just crossed the boundary
            is still classified correctly by many single draws.
        seed: seeds the random starts (the attack's own CPU generator: equal on every device).

    ``forward(images, labels, eps=None, init=None)``: images (B, C, H, W) in [0, 1]; labels (B,) or
    None (the model's predictions), target classes when ``targeted``; eps a scalar or (B,) tensor;
    init optional (B, C, H, W) U(−1, 1) values for the first restart's random start (gen-adv's
    per-row noise, scaled onto the unit sphere of ``norm``; later restarts draw from the attack's
    generator). Returns (B, C, H, W) in
    [0, 1]: where the attack succeeded, its last successful iterate (the first with
    ``early_stop``); elsewhere the highest-loss iterate of all restarts. (torchattacks' and
    AutoAttack's APGD return the clean image where they fail; the success rate is the same.)
    """

    name = "apgd"
    supports_eot = True
    threat_norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        loss: str = "ce",
        norm: str = "linf",
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        early_stop: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps, restarts=restarts)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use {' or '.join(LOSSES)}")
        if loss == "dlr" and self.targeted:
            raise ValueError("targeted APGD uses the cross-entropy loss (the targeted DLR loss needs the true labels)")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.eps = eps
        self.steps = steps
        self.loss = loss
        self.min_classes = 3 if loss == "dlr" else 2
        self.set_norm(norm)
        self.restarts = restarts
        self.rho = rho
        self.momentum = momentum
        self.early_stop = early_stop
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) loss each image's iterates ascend (higher: nearer success)."""
        if self.loss == "dlr":
            return dlr_loss(logits, labels)
        return super().sample_loss(logits, labels)

    def loss_and_gradient(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(∇_x of the summed loss, (B,) per-image loss, logits) at detached ``images``: means over
        ``eot_samples`` passes (AutoAttack's ``eot_iter``), see `Attack.expected_gradient`."""
        return self.expected_gradient(images, labels)

    def draw_start(self, shape: torch.Size) -> torch.Tensor:
        """Random start offsets in units of eps (CPU, from the attack's generator), on the ball's
        surface as in AutoAttack: L∞ from a uniform draw, L2 from a Gaussian one."""
        return draw_on_unit_sphere(shape, self.norm, self._generator)

    def project(self, x: torch.Tensor, x0: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
        """``x`` into the ``norm`` ball of radius ``eps_t`` (B, 1, 1, 1) around ``x0``, and [0, 1]."""
        return project_l2(x, x0, eps_t) if self.norm == "l2" else project_linf(x, x0, eps_t)

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit step of ``grad``'s ascent: its sign (L∞) or its unit-L2 scaling (L2)."""
        return unit_l2(grad) if self.norm == "l2" else grad.sign()

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        if init is not None and init.shape != x0.shape:
            raise ValueError(f"init must have shape {tuple(x0.shape)}, got {tuple(init.shape)}")
        with torch.no_grad():
            clean_logits = self.logits(x0)
        fooled = self.succeeded(clean_logits, labels)
        out = x0.clone()
        best_loss = torch.full((x0.shape[0],), -math.inf, device=x0.device)
        for i, run_labels in enumerate(self.searches(labels, clean_logits, fooled)):
            self.run_restarts(x0, run_labels, eps_t, init if i == 0 else None, fooled, out, best_loss)
        return out.detach()

    def searches(
        self, labels: torch.Tensor, clean_logits: torch.Tensor, fooled: torch.Tensor
    ) -> Iterator[torch.Tensor]:
        """The labels of each search `forward` runs (with its restarts): here one, the labels
        themselves. A subclass may yield more (APGD-T: one per target); ``fooled`` is updated in
        place between yields."""
        yield labels

    def run_restarts(
        self,
        x0: torch.Tensor,
        labels: torch.Tensor,
        eps_t: torch.Tensor,
        init: torch.Tensor | None,
        fooled: torch.Tensor,
        out: torch.Tensor,
        best_loss: torch.Tensor,
    ) -> None:
        """``restarts`` runs; updates ``fooled`` (B,) bool, ``out`` (B, C, H, W) and ``best_loss`` (B,)
        in place. ``labels`` may carry extra columns a subclass's loss reads (indexed with the rows)."""
        for restart in range(self.restarts):
            # the first run attacks every image (without early stop); later ones those never fooled
            todo = (~fooled if self.early_stop or restart else torch.ones_like(fooled)).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            start = self.draw_start(x0.shape) if init is None or restart else to_unit_sphere(init.float(), self.norm)
            adv, hit, x_best, loss_best = self.single_run(x0[todo], labels[todo], eps_t[todo],
                                                          start.to(x0.device)[todo])
            fooled[todo[hit]] = True
            out[todo[hit]] = adv[hit]
            better = ~fooled[todo] & (loss_best > best_loss[todo])
            out[todo[better]] = x_best[better]
            best_loss[todo[better]] = loss_best[better]

    def single_run(
        self, x0: torch.Tensor, labels: torch.Tensor, eps_t: torch.Tensor, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run from ``x0 + eps·start``.

        Returns (adv, fooled, x_best, loss_best): the last successful iterate per image (the first
        with ``early_stop``; valid where ``fooled``), (B,) bool, the highest-loss iterate and its
        (B,) loss.
        """
        n = x0.shape[0]
        x = self.project(x0 + eps_t * start, x0, eps_t)
        grad, loss, logits = self.loss_and_gradient(x, labels)
        fooled = self.succeeded(logits, labels)
        adv = x.clone()
        x_best, loss_best, grad_best = x.clone(), loss.clone(), grad.clone()
        x_prev = x.clone()
        step = 2 * eps_t.clone()
        last_loss = loss.clone()
        rises = torch.zeros(n, device=x0.device)
        # the first checkpoint only halves on oscillation: there is no earlier best to compare with
        halved_last = torch.ones(n, dtype=torch.bool, device=x0.device)
        best_at_last = loss_best.clone()
        intervals = iter(checkpoint_intervals(self.steps))
        next_check = next(intervals, None)
        since_check = 0
        active = (~fooled if self.early_stop else torch.ones_like(fooled)).nonzero().squeeze(1)
        for i in range(self.steps):
            if active.numel() == 0:
                break
            xa, e = x[active], eps_t[active]
            z = self.project(xa + step[active] * self.ascent_direction(grad[active]), x0[active], e)
            a = 1.0 if i == 0 else self.momentum
            x_new = self.project(xa + a * (z - xa) + (1 - a) * (xa - x_prev[active]), x0[active], e)
            x_prev[active] = xa
            x[active] = x_new
            g, lo, lg = self.loss_and_gradient(x_new, labels[active])
            grad[active] = g
            rises[active] += (lo > last_loss[active]).float()
            last_loss[active] = lo
            improved = lo > loss_best[active]
            better = active[improved]
            x_best[better], loss_best[better], grad_best[better] = x_new[improved], lo[improved], g[improved]
            hit = self.succeeded(lg, labels[active])
            adv[active[hit]] = x_new[hit]
            fooled[active[hit]] = True

            since_check += 1
            if since_check == next_check:
                oscillating = rises[active] <= self.rho * next_check
                stalled = ~halved_last[active] & (best_at_last[active] >= loss_best[active])
                halve = oscillating | stalled
                halved_last[active] = halve
                best_at_last[active] = loss_best[active]
                back = active[halve]  # restart those from their best point with half the step
                step[back] /= 2
                x[back], grad[back] = x_best[back], grad_best[back]
                rises[active] = 0
                since_check, next_check = 0, next(intervals, None)
            if self.early_stop:
                active = active[~hit]
        return adv, fooled, x_best, loss_best

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": self.norm,
            "eps": self.eps,
            "steps": self.steps,
            "loss": self.loss,
            "restarts": self.restarts,
            "rho": self.rho,
            "momentum": self.momentum,
            "early_stop": self.early_stop,
            "seed": self.seed,
        }

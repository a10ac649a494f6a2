"""FAB, the Fast Adaptive Boundary attack, L∞ or L2 (Croce & Hein, 2020): a minimum-norm attack.

Each step linearizes the classifier at the current point, takes the nearest linearized decision
boundary, and moves to a convex mix of two projections onto it: of the current point (progress)
and of the clean image (small norm), slightly overshooting. Once a point is adversarial it is
recorded and pulled back towards the clean image, so the search walks along the boundary towards
the clean image. FAB-T (`FABT`) searches towards one target class at a time and is AutoAttack's
third attack.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, check_counts, draw_on_unit_sphere
from advkit.attacks.boundary import nearest_boundary
from advkit.attacks.registry import register_attack
from advkit.attacks.targets import next_ranked_targets


def _towards_hyperplane(
    points: torch.Tensor, normals: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What both projections start from (shapes checked): each coordinate's direction of travel
    (±1, the one that moves h towards 0; 0 where w_i = 0), its room to the box edge that way, |w_i|
    where it moves, and |h(p)| (N,)."""
    if points.ndim != 2 or normals.shape != points.shape or values.shape != points.shape[:1]:
        raise ValueError(f"points and normals must be (N, n) and values (N,), got {tuple(points.shape)}, "
                         f"{tuple(normals.shape)} and {tuple(values.shape)}")
    direction = -torch.sign(values)[:, None] * torch.sign(normals)
    room = torch.where(direction > 0, 1 - points, points).clamp_min(0)
    return direction, room, normals.abs() * (direction != 0), values.abs()


def linf_step_to_hyperplane(points: torch.Tensor, normals: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The smallest-L∞ step onto a hyperplane inside the unit box, for each row.

    For a point p with the affine function h(z) = w·(z − p) + v (``values`` v = h(p)), returns the
    step d of least ‖d‖_∞ with h(p + d) = 0 and p + d in [0, 1]^n. Where the box does not reach
    the hyperplane, d is the step that gets closest (each coordinate to its box edge).

    Every coordinate moves by min(t, room) in the direction that lowers |h|, so w·d is a
    piecewise-linear, increasing function of the common bound t; the break points are the rooms,
    sorted once, and t follows in closed form between two of them.

    Args:
        points: (N, n) float in [0, 1]; normals: (N, n) the w of each row; values: (N,) h(p).
    Returns: (N, n) steps.
    """
    direction, room, weight, need = _towards_hyperplane(points, normals, values)
    room_sorted, order = room.sort(dim=1)
    weight_sorted = weight.gather(1, order)
    # at t = room_sorted[k]: h moves by Σ_{j<k} weight_j room_j + t · Σ_{j≥k} weight_j
    done_before = torch.cumsum(weight_sorted * room_sorted, dim=1) - weight_sorted * room_sorted
    weight_after = weight_sorted.sum(1, keepdim=True) - torch.cumsum(weight_sorted, dim=1) + weight_sorted
    reach = done_before + room_sorted * weight_after
    k = (reach < need[:, None]).sum(1, keepdim=True)  # the first break point that reaches the hyperplane
    feasible = k.squeeze(1) < points.shape[1]
    k = k.clamp_max(points.shape[1] - 1)
    bound = (need[:, None] - done_before.gather(1, k)) / weight_after.gather(1, k).clamp_min(1e-30)
    bound = torch.where(feasible[:, None], bound.clamp_min(0), torch.full_like(bound, math.inf))
    return direction * torch.minimum(room, bound)


def l2_step_to_hyperplane(points: torch.Tensor, normals: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The smallest-L2 step onto a hyperplane inside the unit box, for each row.

    As `linf_step_to_hyperplane`, in L2: the optimum moves each coordinate by min(t·|w_i|, room_i)
    towards the hyperplane for a common t (the box-clipped multiple of w that the KKT conditions
    give), so w·d is piecewise linear and increasing in t, with break points room_i / |w_i|,
    sorted once; t follows in closed form between two of them. Where the box does not reach the
    hyperplane, d is the step that gets closest (each coordinate with w_i ≠ 0 to its box edge).

    Args:
        points: (N, n) float in [0, 1]; normals: (N, n) the w of each row; values: (N,) h(p).
    Returns: (N, n) steps.
    """
    direction, room, size, need = _towards_hyperplane(points, normals, values)
    # coordinates that do not move (w_i = 0) break at t = inf: sorted last, adding nothing
    breaks = torch.where(size > 0, room / size.clamp_min(1e-30), torch.full_like(room, math.inf))
    breaks_sorted, order = breaks.sort(dim=1)
    size_sorted, room_sorted = size.gather(1, order), room.gather(1, order)
    # at t = breaks_sorted[k]: h moves by Σ_{j<k} |w_j| room_j + t · Σ_{j≥k} w_j²
    done_before = torch.cumsum(size_sorted * room_sorted, dim=1) - size_sorted * room_sorted
    # Σ_{j≥k} w_j² as a reversed cumulative sum: a total minus a running sum cancels to ±1e-6 at the tail
    square_after = size_sorted.square().flip(1).cumsum(1).flip(1)
    reach = torch.where(torch.isinf(breaks_sorted), math.inf, done_before + breaks_sorted * square_after)
    k = (reach < need[:, None]).sum(1, keepdim=True)
    feasible = k.squeeze(1) < points.shape[1]
    k = k.clamp_max(points.shape[1] - 1)
    t = (need[:, None] - done_before.gather(1, k)) / square_after.gather(1, k).clamp_min(1e-30)
    t = torch.where(feasible[:, None], t.clamp_min(0), torch.full_like(t, math.inf))
    return direction * torch.minimum(room, torch.where(size > 0, t * size, torch.zeros_like(size)))


@register_attack
class FAB(Attack):
    """FAB, L∞ or L2, untargeted: each step linearizes the boundary to every other class (one
    backward per class: cheap for CIFAR-10, costly for 1000 classes, where `FABT` is the practical
    choice).

    Args:
        model: classifier over [0, 1] images.
        eps: radius in ``norm`` on the [0, 1] scale: the output keeps an adversarial only within it,
            and it sizes the random starts (a per-sample tensor may be passed to ``forward``; an L2
            radius may exceed 1).
        norm: ``linf`` (default) or ``l2``: the distance minimized (projections, nearest boundary,
            random starts and ``norms`` all in it), as AutoAttack's FAB ``norm``.
        steps: iterations per run (100, AutoAttack's; torchattacks' FAB defaults to 10).
        restarts: runs per search; the first starts at the clean image, later ones at a random
            point at L∞ distance eps/2, on the images not yet fooled within eps.
        alpha_max: the largest weight of the clean image's projection in a step (0.1).
        eta: overshoot of the projections past the linearized boundary (1.05).
        beta: a fooled point is pulled back to clean + beta·(point − clean) (0.9).
        seed: seeds the random starts (the attack's own CPU generator: equal on every device).

    ``forward(images, labels=None, eps=None)``: images (B, C, H, W) in [0, 1], labels (B,) true
    classes (None: the model's predictions). Returns (B, C, H, W) in [0, 1]: the smallest
    adversarial found where it lies within eps, the clean image elsewhere (as torchattacks and
    AutoAttack). After a call, ``norms`` (B,) holds the L∞ distance of the adversarial each image
    got (0 for images misclassified from the start, inf where none was found; it may exceed eps).
    """

    name = "fab"
    minimum_norm = True
    supports_targeted = False
    threat_norms = ("linf", "l2")

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int = 0, norm: str = "linf",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps, restarts=restarts)
        self.set_norm(norm)
        if not 0 <= alpha_max <= 1:
            raise ValueError(f"alpha_max must lie in [0, 1], got {alpha_max}")
        if eta < 1:
            raise ValueError(f"eta must be >= 1 (an overshoot), got {eta}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        self.eps = eps
        self.steps, self.restarts = steps, restarts
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self.norms = torch.empty(0)

    def searches(
        self, labels: torch.Tensor, clean_logits: torch.Tensor, done: torch.Tensor
    ) -> Iterator[torch.Tensor | None]:
        """The target classes of each search (None: every other class; `FABT`: one per target);
        ``done`` (images fooled within eps) is updated in place between yields."""
        yield None

    def boundary(
        self, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The linearization at ``x`` of the nearest boundary f_l − f_y = 0 (l = the target, or the
        other class nearest in the attack's norm to first order): its value (B,) and gradient
        (B, C, H, W)."""
        x = x.detach().requires_grad_(True)
        return nearest_boundary(x, self.logits(x), labels, targets, dual_p=2 if self.norm == "l2" else 1)

    def single_run(
        self, x0: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, start: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run from ``start`` (None: the clean images ``x0``). Returns the smallest
        adversarial found per image and its (B,) distance (inf and ``x0`` where none)."""
        n = x0.shape[0]
        x = x0.clone() if start is None else start
        best, best_norm = x0.clone(), torch.full((n,), math.inf, device=x0.device)
        flat0 = x0.flatten(1)
        for _ in range(self.steps):
            gap, grad = self.boundary(x, labels, targets)
            w = grad.flatten(1)
            flat = x.flatten(1)
            # the same hyperplane seen from the current point and from the clean image
            value_at_clean = gap + (w * (flat0 - flat)).sum(1)
            project = l2_step_to_hyperplane if self.norm == "l2" else linf_step_to_hyperplane
            steps = project(torch.cat([flat, flat0]), torch.cat([w, w]), torch.cat([gap, value_at_clean]))
            to_boundary, from_clean = steps[:n].view_as(x), steps[n:].view_as(x)
            size = self.distance(steps).clamp_min(1e-8)
            alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, self.alpha_max).view(n, 1, 1, 1)
            x = ((x + self.eta * to_boundary) * (1 - alpha) + (x0 + self.eta * from_clean) * alpha).clamp(0, 1)
            with torch.no_grad():
                fooled = self.succeeded(self.logits(x), labels)
            norm = self.distance(x - x0)
            smaller = fooled & (norm < best_norm)
            best[smaller], best_norm[smaller] = x[smaller], norm[smaller]
            x = torch.where(fooled.view(n, 1, 1, 1), x0 + (x - x0) * self.beta, x)
        return best, best_norm

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        with torch.no_grad():
            clean_logits = self.logits(x0)
        done = self.succeeded(clean_logits, labels)  # misclassified from the start: nothing to search
        norms = torch.where(done, 0.0, math.inf)
        out = x0.clone()
        eps_flat = eps_t.flatten()
        for targets in self.searches(labels, clean_logits, done):
            for restart in range(self.restarts):
                todo = (~done).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                start = None
                if restart:
                    noise = draw_on_unit_sphere(x0.shape, self.norm, self._generator).to(x0.device)[todo]
                    start = (x0[todo] + 0.5 * eps_t[todo] * noise).clamp(0, 1)
                best, best_norm = self.single_run(x0[todo], labels[todo], None if targets is None else targets[todo],
                                                  start)
                norms[todo] = torch.minimum(norms[todo], best_norm)
                within = best_norm <= eps_flat[todo]
                out[todo[within]] = best[within]
                done[todo[within]] = True
        self.norms = norms
        return out.detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": self.norm, "eps": self.eps, "steps": self.steps, "restarts": self.restarts,
                "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta, "seed": self.seed}


@register_attack
class FABT(FAB):
    """FAB-T, L∞ or L2: FAB towards one target class at a time, the class with the k-th highest clean
    logit after the top one for k = 1..``n_targets``, on the images not yet fooled within eps. One
    backward per step whatever the class count. Success is untargeted (any wrong class), as in
    AutoAttack. Arguments and ``forward`` as `FAB`'s, plus ``n_targets`` (9: every other CIFAR-10
    class; ``restarts`` apply per target)."""

    name = "fab-t"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_targets: int = 9,
                 **kwargs: Any) -> None:
        super().__init__(model, eps=eps, steps=steps, **kwargs)
        check_counts(n_targets=n_targets)
        self.n_targets = n_targets

    def searches(
        self, labels: torch.Tensor, clean_logits: torch.Tensor, done: torch.Tensor
    ) -> Iterator[torch.Tensor | None]:
        yield from next_ranked_targets(clean_logits, self.n_targets, done)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_targets": self.n_targets}

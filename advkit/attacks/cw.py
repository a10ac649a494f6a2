"""The Carlini–Wagner L2 attack (Carlini & Wagner, 2017): a minimum-L2 attack by optimization.

It minimizes ‖x' − x‖²₂ + c · f(x') over x' = (tanh(w) + 1) / 2 (the box [0, 1] by change of
variables), with the margin f = max(z_y − max_{j≠y} z_j, −κ) (targeted: max(max_{j≠t} z_j − z_t,
−κ)), by Adam on w; a binary search per image adjusts c between searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, check_counts
from advkit.attacks.registry import register_attack

# atanh of exactly ±1 is infinite: a pixel at 0 or 1 would never move again (and get no gradient)
_TANH_MARGIN = 1 - 1e-6


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """(B,) z_y − max_{j≠y} z_j (untargeted; ``labels`` the true classes), or max_{j≠t} z_j − z_t
    (targeted; ``labels`` the targets): negative exactly where the attack has succeeded."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return others - own if targeted else own - others


def search_over_c(
    attack: Attack,
    search: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    x0: torch.Tensor, labels: torch.Tensor, c_start: float, steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's per-image binary search over the margin weight c, shared by `CW` and `EAD`.

    Images ``attack`` already finds adversarial come back unchanged at cost 0. For the others,
    ``search(images, labels, c)`` runs one optimization with per-image weights c and returns
    (adversarial images, (B,) cost, (B,) bool fooled); after each, c bisects between the largest
    value that failed and the smallest that succeeded (×10 while none has). Returns each image's
    lowest-cost adversarial (the input where none was found) and its cost (inf where none).
    """
    out = x0.clone()
    best = torch.full((x0.shape[0],), math.inf, device=x0.device)
    with torch.no_grad():
        done = attack.succeeded(attack.logits(x0), labels)  # already adversarial: nothing to minimize
    best[done] = 0
    todo = (~done).nonzero().squeeze(1)
    c = torch.full((len(todo),), float(c_start), device=x0.device)
    lower, upper = torch.zeros_like(c), torch.full_like(c, math.inf)
    for _ in range(steps if len(todo) else 0):
        adv, cost, fooled = search(x0[todo], labels[todo], c)
        better = fooled & (cost < best[todo])
        out[todo[better]], best[todo[better]] = adv[better], cost[better]
        upper = torch.where(fooled, torch.minimum(upper, c), upper)
        lower = torch.where(fooled, lower, torch.maximum(lower, c))
        c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
    return out, best


@register_attack
class CW(Attack):
    """Carlini–Wagner L2.

    Args:
        model: classifier over [0, 1] images.
        c: the weight of the margin term against the squared L2 distance (1, torchattacks'
            default; the paper starts its search at 0.01); a starting value when
            ``binary_search_steps`` > 1.
        kappa: confidence κ: the margin an adversarial must reach (0).
        steps: Adam iterations per search step (50, torchattacks'; the paper uses up to 10,000).
        lr: Adam's learning rate on w (0.01).
        binary_search_steps: searches for c per image (1: c as given, torchattacks' choice; the
            paper uses 9): after each, c halves towards the last failure where the image was
            fooled, and grows tenfold (or bisects) where it was not.
        abort_early: stop an image's search step when its loss has not fallen by 0.01 % over a
            tenth of the steps (the paper's rule, per image here, so a batch gives the same
            result as its images one by one).
        targeted, precision, channels_last: as `Attack`.

    ``forward(images, labels=None)``: images (B, C, H, W) in [0, 1], labels (B,) (None: the
    model's predictions; target classes when ``targeted``). Returns (B, C, H, W) in [0, 1]: the
    smallest-L2 adversarial found (its margin past κ), the clean image where none was. After a
    call, ``norms`` (B,) holds each returned adversarial's L2 distance (inf where none was found;
    0 for images already misclassified, which come back unchanged).
    """

    name = "cw"
    threat_norms = ("l2",)
    minimum_norm = True

    def __init__(self, model: nn.Module, c: float = 1.0, kappa: float = 0.0, steps: int = 50, lr: float = 0.01,
                 binary_search_steps: int = 1, abort_early: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps, binary_search_steps=binary_search_steps)
        if not c > 0:
            raise ValueError(f"c must be > 0, got {c}")
        if not kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {kappa}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.c, self.kappa, self.steps, self.lr = c, kappa, steps, lr
        self.binary_search_steps = binary_search_steps
        self.abort_early = abort_early
        self.norms = torch.empty(0)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x0, labels = self.prepare_batch(images, labels)

        def search(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.search(x, torch.atanh((x * 2 - 1) * _TANH_MARGIN), y, c)

        out, best_sq = search_over_c(self, search, x0, labels, self.c, self.binary_search_steps)
        self.norms = best_sq.sqrt()
        return out.detach()

    def search(
        self, x0: torch.Tensor, w0: torch.Tensor, labels: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Adam run on w from ``w0`` with per-image weights ``c`` (B,). Returns the
        smallest-L2 adversarial iterate per image, its squared L2 distance (B,) (inf where none)
        and (B,) bool: whether one was found."""
        n = x0.shape[0]
        w = w0.clone()
        first, second = torch.zeros_like(w), torch.zeros_like(w)  # Adam's moment estimates
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        best, best_sq = x0.clone(), torch.full((n,), math.inf, device=x0.device)
        previous = torch.full((n,), math.inf, device=x0.device)
        check_every = max(self.steps // 10, 1)
        active = torch.arange(n, device=x0.device)
        for step in range(1, self.steps + 1):
            if active.numel() == 0:
                break
            wa = w[active].requires_grad_(True)
            adv = (torch.tanh(wa) + 1) / 2
            sq = (adv - x0[active]).flatten(1).pow(2).sum(1)
            margin = cw_margin(self.logits(adv), labels[active], self.targeted)
            loss = sq + c[active] * margin.clamp_min(-self.kappa)
            (grad,) = torch.autograd.grad(loss.sum(), wa)
            with torch.no_grad():
                fooled = margin < -self.kappa
                smaller = fooled & (sq < best_sq[active])
                best[active[smaller]], best_sq[active[smaller]] = adv[smaller], sq[smaller]
                first[active] = beta1 * first[active] + (1 - beta1) * grad
                second[active] = beta2 * second[active] + (1 - beta2) * grad * grad
                m_hat = first[active] / (1 - beta1**step)
                v_hat = second[active] / (1 - beta2**step)
                w[active] = wa.detach() - self.lr * m_hat / (v_hat.sqrt() + adam_eps)
                if self.abort_early and step % check_every == 0:
                    stalled = loss.detach() > previous[active] * 0.9999
                    previous[active] = loss.detach()
                    active = active[~stalled]
        return best, best_sq, torch.isfinite(best_sq)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": "l2", "c": self.c, "kappa": self.kappa, "steps": self.steps,
                "lr": self.lr, "binary_search_steps": self.binary_search_steps, "abort_early": self.abort_early}

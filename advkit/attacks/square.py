"""Square Attack, L∞ (Andriushchenko et al., 2020): a score-based black-box attack.

It needs the model's logits only, never a gradient: each query changes one random square of the
perturbation to a new vertex of the eps-ball and keeps the change if the margin loss went down.
That makes it the check on defenses whose gradients are masked, approximated (BPDA) or absent.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks.base import Attack, check_counts
from advkit.attacks.registry import register_attack

LOSSES = ("margin", "ce")
# Query counts (on a 10,000-query scale) after which the square's area fraction p halves again.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(query: int, queries: int, p_init: float = 0.8, rescale: bool = True) -> float:
    """The fraction p of the image a square covers at ``query`` (0-based) of ``queries``: p_init,
    halved after each of `P_HALVINGS` (the paper's schedule for 10,000 queries, stretched to
    ``queries`` when ``rescale``)."""
    it = int(query / queries * 10000) if rescale else query
    return p_init / 2 ** sum(it > t for t in P_HALVINGS)


@register_attack
class Square(Attack):
    """Square Attack, L∞, on the margin loss (or the cross-entropy).

    Args:
        model: classifier over [0, 1] images; only its outputs are used (under ``no_grad``).
        eps: L∞ radius on the [0, 1] scale (a per-sample tensor may be passed to ``forward``).
        queries: model evaluations per image and restart, the first included (default 5000, as
            torchattacks; AutoAttack uses 5000 too). Images stop as soon as they are fooled.
        p_init: the first squares' share of the image's area (0.8); it halves on a fixed schedule.
        loss: ``margin`` (z_y − max_{j≠y} z_j, minimized; targeted: max_{j≠t} z_j − z_t) or ``ce``.
        restarts: runs from fresh stripes, each on the images still not fooled.
        rescale_schedule: stretch the schedule of p, made for 10,000 queries, to ``queries``.
        seed: seeds the squares and signs (the attack's own CPU generator: equal on every device).

    ``forward(images, labels, eps=None)``: images (B, C, H, W) in [0, 1]; labels (B,) or None (the
    model's predictions), target classes when ``targeted``. Returns (B, C, H, W) in [0, 1]: the
    first successful point where the attack succeeded, else the lowest-loss point it found.
    Squares are drawn per image (the paper's code; AutoAttack and torchattacks draw one square
    for the whole batch).
    """

    name = "square"
    black_box = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        queries: int = 5000,
        p_init: float = 0.8,
        loss: str = "margin",
        restarts: int = 1,
        rescale_schedule: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        check_counts(queries=queries, restarts=restarts)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use {' or '.join(LOSSES)}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
        self.eps = eps
        self.queries = queries
        self.p_init = p_init
        self.loss = loss
        self.restarts = restarts
        self.rescale_schedule = rescale_schedule
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def margin_and_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) margin (≤ 0: success) and (B,) loss to minimize."""
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        margin = others - label_logit if self.targeted else label_logit - others
        if self.loss == "margin":
            return margin, margin
        ce = F.cross_entropy(logits, labels, reduction="none")
        return margin, ce if self.targeted else -ce

    def random_signs(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return (torch.randint(0, 2, shape, generator=self._generator) * 2 - 1).float().to(device)

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        margin, _ = self.margin_and_loss(self.logits(x0), labels)
        fooled = margin <= 0
        out = x0.clone()
        best_loss = torch.full((x0.shape[0],), math.inf, device=x0.device)
        for _ in range(self.restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            adv, hit, loss = self.single_run(x0[todo], labels[todo], eps_t[todo])
            keep = hit | (loss < best_loss[todo])
            out[todo[keep]] = adv[keep]
            best_loss[todo[keep]] = loss[keep]
            fooled[todo[hit]] = True
        return out

    def single_run(
        self, x0: torch.Tensor, labels: torch.Tensor, eps_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run: (best images, (B,) fooled, (B,) their loss)."""
        b, c, h, w = x0.shape
        device = x0.device
        # vertical stripes of ±eps: the paper's start, already a strong perturbation for CNNs
        x = (x0 + eps_t * self.random_signs((b, c, 1, w), device)).clamp(0, 1)
        margin, loss = self.margin_and_loss(self.logits(x), labels)
        rows = torch.arange(h, device=device).view(1, 1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, 1, w)
        for query in range(1, self.queries):
            active = (margin > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            n = active.numel()
            p = square_fraction(query - 1, self.queries, self.p_init, self.rescale_schedule)
            side = min(max(round(math.sqrt(p * h * w)), 1), h - 1, w - 1) if min(h, w) > 1 else 1
            top = torch.randint(0, h - side + 1, (n,), generator=self._generator).to(device).view(n, 1, 1, 1)
            left = torch.randint(0, w - side + 1, (n,), generator=self._generator).to(device).view(n, 1, 1, 1)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            xa, x0a, ea = x[active], x0[active], eps_t[active]
            signs = self.random_signs((n, c, 1, 1), device)
            for _ in range(10):  # draw again where the new vertex equals the current window
                candidate = torch.where(window, (x0a + ea * signs).clamp(0, 1), xa)
                same = ((candidate - xa).abs() < 1e-7).flatten(1).all(1)
                if not bool(same.any()):
                    break
                signs[same] = self.random_signs((int(same.sum()), c, 1, 1), device)
            new_margin, new_loss = self.margin_and_loss(self.logits(candidate), labels[active])
            lower = new_loss < loss[active]
            take = lower | (new_margin <= 0)
            moved = active[take]
            x[moved] = candidate[take]
            margin[moved] = new_margin[take]
            loss[active[lower]] = new_loss[lower]
        return x, margin <= 0, loss

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": "linf",
            "eps": self.eps,
            "queries": self.queries,
            "p_init": self.p_init,
            "loss": self.loss,
            "restarts": self.restarts,
            "rescale_schedule": self.rescale_schedule,
            "seed": self.seed,
        }

"""Square Attack, L∞ or L2 (Andriushchenko et al., 2020): a score-based black-box attack.

It needs the model's logits only, never a gradient: each query changes one random square of the
perturbation (L∞: to a new vertex of the eps-ball; L2: to a new pair of opposite "pseudo-Gaussian"
bumps, moving mass from a second square) and keeps the change if the margin loss went down. That
makes it the check on defenses whose gradients are masked, approximated (BPDA) or absent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks.base import Attack, check_counts, unit_l2
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


def centred_rectangles(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) concentric rectangles around the centre, ring k weighted 1/(k+1)², unit L2
    norm: the paper's "pseudo-Gaussian" bump of the L2 attack."""
    bump = torch.zeros(rows, cols)
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        bump[max(top - k, 0):min(top + k + 1, rows), max(left - k, 0):min(left + k + 1, cols)] += 1.0 / (k + 1) ** 2
    return bump / bump.norm()


def l2_square_pattern(side: int) -> torch.Tensor:
    """(side, side) the L2 attack's update: a bump on the top half, the negated bump on the bottom
    half, unit L2 norm (transposed by the caller at random)."""
    half = side // 2
    pattern = torch.cat([centred_rectangles(half, side), -centred_rectangles(side - half, side)]) if half else \
        -centred_rectangles(side, side)
    return pattern / pattern.norm()


def unit_l2_channels(t: torch.Tensor) -> torch.Tensor:
    """Each (image, channel) plane of ``t`` (N, C, S, S) scaled to L2 norm 1 (zero planes stay 0)."""
    norm = t.flatten(2).norm(dim=2)[..., None, None]
    return torch.where(norm > 0, t / norm.clamp_min(1e-30), torch.zeros_like(t))


@register_attack
class Square(Attack):
    """Square Attack, L∞ or L2, on the margin loss (or the cross-entropy).

    Args:
        model: classifier over [0, 1] images; only its outputs are used (under ``no_grad``).
        eps: radius in ``norm`` on the [0, 1] scale (a per-sample tensor may be passed to
            ``forward``; an L2 radius may exceed 1).
        norm: ``linf`` (default) or ``l2`` (the paper's L2 attack: pseudo-Gaussian squares, the
            perturbation kept on the L2 sphere of radius eps), as AutoAttack's ``norm``.
        queries: model evaluations per image and restart, the first included (default 5000, as
            torchattacks; AutoAttack uses 5000 too), plus one of the clean image per call. Images stop as soon as they are fooled.
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
    threat_norms = ("linf", "l2")

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
        norm: str = "linf",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        check_counts(queries=queries, restarts=restarts)
        self.set_norm(norm)
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
        # done: fooled already, or a zero radius, where no query could change anything
        fooled = (margin <= 0) | (eps_t.flatten() == 0)
        out = x0.clone()
        best_loss = torch.full((x0.shape[0],), math.inf, device=x0.device)
        for _ in range(self.restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            run = self.single_run_l2 if self.norm == "l2" else self.single_run
            adv, hit, loss = run(x0[todo], labels[todo], eps_t[todo])
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
        for active, p in self.query_rounds(margin):
            n = active.numel()
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
            self.accept(candidate, active, labels, x, margin, loss)
        return x, margin <= 0, loss

    def query_rounds(self, margin: torch.Tensor) -> Iterator[tuple[torch.Tensor, float]]:
        """For each query after the first: the images still not fooled by ``margin`` (B,) (updated
        in place by `accept` between rounds) and the square's area fraction; ends when none are left."""
        for query in range(1, self.queries):
            active = (margin > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                return
            yield active, square_fraction(query - 1, self.queries, self.p_init, self.rescale_schedule)

    def accept(self, candidate: torch.Tensor, active: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
               margin: torch.Tensor, loss: torch.Tensor) -> None:
        """Query ``candidate`` (the images ``active`` (n,) of ``x``) and keep it where the loss went
        down or the image is fooled; ``x``, ``margin`` and ``loss`` (the lowest) updated in place."""
        new_margin, new_loss = self.margin_and_loss(self.logits(candidate), labels[active])
        lower = new_loss < loss[active]
        take = lower | (new_margin <= 0)
        moved = active[take]
        x[moved] = candidate[take]
        margin[moved] = new_margin[take]
        loss[active[lower]] = new_loss[lower]

    def random_patterns(self, n: int, side: int, device: torch.device) -> torch.Tensor:
        """(n, 1, side, side) `l2_square_pattern`, each transposed with probability ½."""
        pattern = l2_square_pattern(side)
        flip = torch.rand(n, generator=self._generator) < 0.5
        return torch.where(flip.view(n, 1, 1, 1), pattern.T, pattern).to(device)

    @staticmethod
    def windows(top: torch.Tensor, left: torch.Tensor, side: int) -> tuple[torch.Tensor, ...]:
        """Index tensors (image, row, column), broadcasting to (n, side, side), of the side × side
        square at (``top``, ``left``) (n,) of each image: ``t[idx]`` is (n, side, side, C)."""
        offsets = torch.arange(side, device=top.device)
        image = torch.arange(top.numel(), device=top.device).view(-1, 1, 1)
        return image, (top.view(-1, 1) + offsets).unsqueeze(2), (left.view(-1, 1) + offsets).unsqueeze(1)

    def single_run_l2(
        self, x0: torch.Tensor, labels: torch.Tensor, eps_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One L2 run (the paper's Algorithm 3): (best images, (B,) fooled, (B,) their loss).

        The start is a grid of pseudo-Gaussian bumps of random sign per channel, scaled to L2 norm
        eps. Each query draws two squares per image: the second's perturbation is removed and its
        mass, with what the image has left below eps, goes to a new bump pattern in the first,
        added to the first's current content; the whole perturbation is rescaled to norm eps.
        """
        b, c, h, w = x0.shape
        device = x0.device

        def signs(n: int) -> torch.Tensor:
            return self.random_signs((n, c, 1, 1), device)

        start = min(h, w) // 5
        delta = torch.zeros_like(x0)
        if start:
            first_h, first_w = (h - 5 * start) // 2, (w - 5 * start) // 2
            for i in range(h // start):
                for j in range(w // start):
                    top, left = first_h + i * start, first_w + j * start
                    if top + start > h or left + start > w:
                        continue
                    delta[:, :, top:top + start, left:left + start] += self.random_patterns(b, start, device) * signs(b)
        else:  # images smaller than 5 pixels a side: random signs
            delta = self.random_signs((b, c, h, w), device)
        x = (x0 + unit_l2(delta) * eps_t).clamp(0, 1)
        margin, loss = self.margin_and_loss(self.logits(x), labels)
        for active, p in self.query_rounds(margin):
            n = active.numel()
            side = max(round(math.sqrt(p * h * w)), 3)
            side = min(side + 1 - side % 2, h, w)  # odd, as the paper's, and inside the image
            x0a, ea = x0[active], eps_t[active]
            current = x[active] - x0a
            tops = [torch.randint(0, h - side + 1, (n,), generator=self._generator).to(device) for _ in range(2)]
            lefts = [torch.randint(0, w - side + 1, (n,), generator=self._generator).to(device) for _ in range(2)]
            first, second = self.windows(tops[0], lefts[0], side), self.windows(tops[1], lefts[1], side)
            in_first = current.permute(0, 2, 3, 1)[first].permute(0, 3, 1, 2)  # (n, C, side, side)
            mask = torch.zeros(n, h, w, dtype=torch.bool, device=device)
            mask[first] = True
            mask[second] = True
            in_windows = (current * mask.unsqueeze(1)).flatten(1).norm(dim=1).view(n, 1, 1, 1)
            spare = (ea.square() - current.flatten(1).norm(dim=1).square().view(n, 1, 1, 1)).clamp_min(0)
            # the new content: a fresh bump pattern plus the square's current direction, per channel
            new = self.random_patterns(n, side, device) * signs(n) + unit_l2_channels(in_first)
            new = unit_l2_channels(new) * (spare / c + in_windows.square()).sqrt()
            updated = current.permute(0, 2, 3, 1).clone()
            updated[second] = 0
            updated[first] = new.permute(0, 2, 3, 1)
            updated = updated.permute(0, 3, 1, 2)
            candidate = (x0a + unit_l2(updated) * ea).clamp(0, 1)
            self.accept(candidate, active, labels, x, margin, loss)
        return x, margin <= 0, loss

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": self.norm,
            "eps": self.eps,
            "queries": self.queries,
            "p_init": self.p_init,
            "loss": self.loss,
            "restarts": self.restarts,
            "rescale_schedule": self.rescale_schedule,
            "seed": self.seed,
        }

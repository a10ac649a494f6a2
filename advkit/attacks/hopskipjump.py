"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020): a decision-based attack, L2 or L∞,
untargeted or targeted.

It reads only the model's top-1 label. From an adversarial start on the decision boundary it
alternates three moves, each batched over the images still being attacked:

1. estimate the boundary's normal at the current point from the labels of random probes around it
   (Monte-Carlo, ``init_evals·√t`` probes at iteration t, at most ``max_evals``),
2. step along it (L2: the unit estimate; L∞: its sign) with a geometric step-size search: the
   step starts at dist/√t and halves until the point is adversarial,
3. binary-search back towards the clean image onto the boundary.

Defaults and the probe radius δ follow the authors' code (γ = 1: θ = γ/d^{3/2} for L2, γ/d² for
L∞, δ = √d·θ·dist resp. d·θ·dist, 0.1 in the first iteration), which ART changed (θ = 0.01/√d).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, DeviceGenerators, as_eps_tensor, check_counts, check_images
from advkit.attacks.registry import register_attack

# How many halvings the step-size search makes before it keeps the boundary point (a step of
# dist/√t·2⁻³⁰ changes nothing a float32 image can hold).
MAX_HALVINGS = 30


@register_attack
class HopSkipJump(Attack):
    """HopSkipJump, L2 or L∞, untargeted or targeted: decision-based (labels only), minimum-norm.

    Args:
        model: classifier over [0, 1] images; only its argmax is read.
        norm: ``"l2"`` (default) or ``"linf"``: the distance minimized.
        steps: iterations (gradient estimate, step, binary search each; 40, the paper's ImageNet runs;
            ART's default is 50).
        init_evals: probes of the first gradient estimate (100); iteration t uses init_evals·√t.
        max_evals: the most probes of one estimate (10,000).
        init_trials: uniform-noise draws tried per image to find an adversarial start (100).
        gamma: γ of the binary-search precision θ and the probe radius δ (1.0, the authors').
        eps: optional radius in ``norm``: images whose adversarial is within it stop early, and the
            output keeps an adversarial only within it (as `FAB`); None (default): no radius, the
            smallest adversarial found is returned.
        eval_batch: images per model call when probing (memory bound, not the result).
        seed: seeds the probe and start draws (one generator per device, `DeviceGenerators`).
        targeted: reach ``labels`` as target classes instead of leaving them.

    ``forward(images, labels=None, eps=None, starts=None)``: images (B, C, H, W) in [0, 1], labels
    (B,) true classes (None: the model's predictions), or the target classes when ``targeted``.
    ``starts`` (B, C, H, W) in [0, 1], optional: a starting image per image, used where it is
    adversarial (e.g. an image of the target class: uniform noise rarely lands in a given class,
    so a targeted attack usually needs them); elsewhere noise draws are tried. Returns
    (B, C, H, W) in [0, 1]: each image's final boundary point (adversarial), or the clean image
    where no start was found or, with eps, where it lies outside. After a call ``norms`` (B,)
    holds each image's distance in ``norm`` (0 for images adversarial from the start, inf where
    no adversarial start was found) and ``queries`` (B,) the model evaluations each image used
    (the attack's own; the labels' check, one image, or the prediction where labels are None, are
    the base class's and not counted).
    """

    name = "hopskipjump"
    threat_norms = ("l2", "linf")
    black_box = True
    minimum_norm = True
    max_eps = math.inf  # an L2 radius may exceed 1

    def __init__(
        self,
        model: nn.Module,
        norm: str = "l2",
        steps: int = 40,
        init_evals: int = 100,
        max_evals: int = 10_000,
        init_trials: int = 100,
        gamma: float = 1.0,
        eps: float | None = None,
        eval_batch: int = 1024,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.set_norm(norm)
        check_counts(steps=steps, init_evals=init_evals, max_evals=max_evals, init_trials=init_trials,
                     eval_batch=eval_batch)
        if init_evals > max_evals:
            raise ValueError(f"init_evals ({init_evals}) must not exceed max_evals ({max_evals})")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if eps is not None and not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.steps, self.init_evals, self.max_evals, self.init_trials = steps, init_evals, max_evals, init_trials
        self.gamma = gamma
        self.eps = eps
        self.eval_batch = eval_batch
        self.seed = seed
        self._generators = DeviceGenerators(seed)
        self.norms = torch.empty(0)
        self.queries = torch.empty(0, dtype=torch.long)

    # -- the decision oracle -------------------------------------------------------------------

    @torch.no_grad()
    def adversarial(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the model's label of each of ``images`` (N, C, H, W) differs from ``labels``
        (targeted: equals it), in calls of at most ``eval_batch`` images."""
        out = []
        for i in range(0, images.shape[0], self.eval_batch):
            hit = self.predict(images[i:i + self.eval_batch]) == labels[i:i + self.eval_batch]
            out.append(hit if self.targeted else ~hit)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=images.device)

    # -- the three moves -----------------------------------------------------------------------

    def blend(self, x0: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
        """The point at ``alpha`` (N,) between ``x0`` and ``x``: L2 the segment's (1−α)·x0 + α·x,
        L∞ ``x`` clipped to the L∞ ball of radius α around ``x0``."""
        a = alpha.view(-1, 1, 1, 1)
        if norm == "l2":
            return (1 - a) * x0 + a * x
        return torch.minimum(torch.maximum(x, x0 - a), x0 + a)

    def binary_search(self, x0: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, norm: str,
                      threshold: torch.Tensor, queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The boundary point between clean ``x0`` and adversarial ``x`` (both (N, C, H, W)), on
        the adversarial side, to within ``threshold`` (N,) of the blend parameter (L2: α ∈ [0, 1];
        L∞: the ball's radius). ``queries`` is counted at ``rows`` (N,)."""
        n = x0.shape[0]
        low = torch.zeros(n, device=x0.device)
        high = torch.ones(n, device=x0.device) if norm == "l2" else (x - x0).flatten(1).abs().amax(1)
        # θ may lie below float32's resolution at the bound (L∞ on large images: d⁻²·dist), so an
        # interval that halving no longer shrinks is done too.
        todo = ((high - low) > threshold).nonzero().squeeze(1)
        while todo.numel():
            mid = (high[todo] + low[todo]) / 2
            hit = self.adversarial(self.blend(x0[todo], x[todo], mid, norm), labels[todo])
            queries[rows[todo]] += 1
            moved = (mid < high[todo]) & (mid > low[todo])
            high[todo] = torch.where(hit, mid, high[todo])
            low[todo] = torch.where(hit, low[todo], mid)
            todo = todo[moved & ((high[todo] - low[todo]) > threshold[todo])]
        return self.blend(x0, x, high, norm)

    def estimate_direction(self, x: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, evals: int,
                           queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The update direction at boundary points ``x`` (N, C, H, W) from ``evals`` probes each at
        radius ``delta`` (N,): the mean of the probes' directions weighted by their centred ±1
        decisions (the authors' baseline), normalized; L∞ takes its sign. Images are probed
        together, as many per model call as ``eval_batch`` probes allow."""
        n = x.shape[0]
        gen = self._generators(x.device)
        per_call = max(1, self.eval_batch // evals)
        directions = []
        for i in range(0, n, per_call):
            xs, d = x[i:i + per_call], delta[i:i + per_call].view(-1, 1, 1, 1, 1)
            shape = (xs.shape[0], evals, *x.shape[1:])
            if self.norm == "l2":
                u = torch.randn(shape, generator=gen, device=x.device)
            else:
                u = torch.rand(shape, generator=gen, device=x.device) * 2 - 1
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(*shape[:2], 1, 1, 1)
            probes = (xs.unsqueeze(1) + d * u).clamp(0, 1)
            u = (probes - xs.unsqueeze(1)) / d
            decision = self.adversarial(probes.flatten(0, 1), labels[i:i + per_call].repeat_interleave(evals))
            decision = decision.float().view(-1, evals) * 2 - 1
            mean = decision.mean(1, keepdim=True)
            # every probe on one side: the mean direction, towards the adversarial side
            weight = torch.where(mean.abs() == 1, mean, decision - mean)
            grad = (weight.view(*shape[:2], 1, 1, 1) * u).mean(1)
            grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            directions.append(grad if self.norm == "l2" else grad.sign())
        queries[rows] += evals
        return torch.cat(directions)

    def step_search(self, x: torch.Tensor, update: torch.Tensor, labels: torch.Tensor, size: torch.Tensor,
                    queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x + ε·update with ε starting at ``size`` (N,) and halving per image until the point is
        adversarial (after `MAX_HALVINGS`, x itself)."""
        eps = size.clone()
        out = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for _ in range(MAX_HALVINGS):
            candidate = (x[todo] + eps[todo].view(-1, 1, 1, 1) * update[todo]).clamp(0, 1)
            hit = self.adversarial(candidate, labels[todo])
            queries[rows[todo]] += 1
            out[todo[hit]] = candidate[hit]
            todo = todo[~hit]
            if todo.numel() == 0:
                break
            eps[todo] /= 2
        return out

    # -- the attack --------------------------------------------------------------------------------

    def start(self, x0: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, rows: torch.Tensor,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial starts for ``x0`` (N, C, H, W): the ``given`` images (N, C, H, W) where they
        are adversarial, else uniform-noise images, up to ``init_trials`` draws per image; each then
        binary-searched on its segment to the clean image (precision 0.001, as the authors').
        Returns (starts, found (N,) bool)."""
        n = x0.shape[0]
        gen = self._generators(x0.device)
        starts, found = x0.clone(), torch.zeros(n, dtype=torch.bool, device=x0.device)
        if given is not None:
            found = self.adversarial(given, labels)
            queries[rows] += 1
            starts[found] = given[found]
        for _ in range(self.init_trials):
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            noise = torch.rand((todo.numel(), *x0.shape[1:]), generator=gen, device=x0.device)
            hit = self.adversarial(noise, labels[todo])
            queries[rows[todo]] += 1
            starts[todo[hit]] = noise[hit]
            found[todo[hit]] = True
        idx = found.nonzero().squeeze(1)
        if idx.numel():
            precision = torch.full((idx.numel(),), 1e-3, device=x0.device)
            starts[idx] = self.binary_search(x0[idx], starts[idx], labels[idx], "l2", precision, queries, rows[idx])
        return starts, found

    def search_threshold(self, dist: torch.Tensor, theta: float) -> torch.Tensor:
        """The binary search's precision: θ (L2, on α ∈ [0, 1]); min(dist·θ, θ) (L∞, on the radius)."""
        return torch.full_like(dist, theta) if self.norm == "l2" else torch.clamp(dist * theta, max=theta)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: float | torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x0, labels = self.prepare_batch(images, labels)
        n = x0.shape[0]
        if starts is not None:
            try:
                check_images(starts)
            except ValueError as exc:
                raise ValueError(f"starts: {exc}") from None
            if starts.shape != x0.shape:
                raise ValueError(f"starts must have the images' shape {tuple(x0.shape)}, got {tuple(starts.shape)}")
            starts = starts.detach().to(x0)
        radius = self.eps if eps is None else eps
        eps_flat = (as_eps_tensor(radius, n, x0, self.max_eps).flatten() if radius is not None
                    else torch.full((n,), -1.0, device=x0.device))  # -1: no radius, never done early
        queries = torch.ones(n, dtype=torch.long, device=x0.device)  # the clean image's label
        fooled = self.adversarial(x0, labels)
        norms = torch.where(fooled, 0.0, math.inf)
        out = x0.clone()
        rows = (~fooled).nonzero().squeeze(1)
        if rows.numel():
            points, found = self.start(x0[rows], labels[rows], queries, rows,
                                       None if starts is None else starts[rows])
            rows, x = rows[found], points[found]
        else:
            x = x0[:0]
        d = math.prod(x0.shape[1:])
        theta = self.gamma / (d ** 1.5 if self.norm == "l2" else d ** 2)

        def onto_boundary(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Adversarial ``x`` of ``rows`` binary-searched back onto the boundary, and its distance."""
            precision = self.search_threshold(self.distance(x - x0[rows]), theta)
            x = self.binary_search(x0[rows], x, labels[rows], self.norm, precision, queries, rows)
            return x, self.distance(x - x0[rows])

        if rows.numel():
            x, dist = onto_boundary(x, rows)
            out[rows], norms[rows] = x, dist
        for t in range(1, self.steps + 1):
            if rows.numel():
                active = dist > eps_flat[rows]
                rows, x, dist = rows[active], x[active], dist[active]
            if rows.numel() == 0:
                break
            delta = torch.full_like(dist, 0.1) if t == 1 else (math.sqrt(d) if self.norm == "l2" else d) * theta * dist
            evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            update = self.estimate_direction(x, labels[rows], delta, evals, queries, rows)
            x = self.step_search(x, update, labels[rows], dist / math.sqrt(t), queries, rows)
            x, dist = onto_boundary(x, rows)
            better = dist < norms[rows]
            out[rows[better]], norms[rows[better]] = x[better], dist[better]
        self.norms, self.queries = norms, queries
        keep = norms <= torch.where(eps_flat < 0, math.inf, eps_flat)
        return torch.where(keep.view(n, 1, 1, 1), out, x0).detach()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": self.norm, "eps": self.eps, "steps": self.steps,
                "init_evals": self.init_evals, "max_evals": self.max_evals, "init_trials": self.init_trials,
                "gamma": self.gamma, "seed": self.seed}

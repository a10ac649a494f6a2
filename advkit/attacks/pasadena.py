"""Pasadena: the perceptually aware and stealthy adversarial denoise attack (Cheng et al.).

Given a noisy image X^n, a kernel-prediction denoiser gives per-pixel kernels K^n (G = 1); the
attack optimizes adversarial kernels K^a (initialised to K^n) and the weights w of multi-scale edge
maps E^i, and outputs

    X^a = kernel_filter(X^n, M ⊙ K^a + (1 − M) ⊙ K^n),   M = sigmoid(Σ_i w_i E^i − θ),

ascending λ·CE(φ(X^a), y) − (1 − λ)·‖K^a − K^n‖², where y = φ(X^n) is the model's own prediction
on its input (Algorithm 1). Each image stops as soon as its prediction differs from y.

Two variants:

- ``variant="paper"``: Algorithm 1 exactly — CE loss, raw gradient ascent K^a += α∇, w += α∇ with
  α = 0.1, T = 10 iterations, the flip checked after each update.
- ``variant="advkit"`` (default): the same kernels, mask and distance term, with four changes, each
  measured on CIFAR-10 (docs/results.md):

  1. per-image normalized steps — each image's kernel gradient is scaled to unit L∞ norm, so one
     step changes a kernel tap by at most ``kernel_step`` whatever the loss scale (w likewise with
     ``weight_step``). The raw gradient w.r.t. kernels varies over orders of magnitude across
     images, so a fixed α either barely moves some images or wrecks others.
  2. the margin loss (best other logit − logit of y) in place of CE. When the denoised image is
     classified with softmax probability 1.0 in fp32, CE's gradient vanishes and the distance term
     pulls K^a back to K^n for good: those images (about 2 %) never flipped. The margin's gradient
     does not saturate.
  3. the flip is checked before the first update, so an image that denoising alone already flips is
     returned as the plain denoised image (Algorithm 1 would perturb it once more).
  4. a final line search: the output is linear in the kernels, so with ΔK = M ⊙ (K^a − K^n) every
     image X(s) = filter(X^n, K^n + s·ΔK) = X^d + s·(X^a − X^d) is one interpolation; ``refine``
     bisection steps find the smallest s ∈ (0, 1] whose output still flips, which removes the
     overshoot of the last step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks.base import Attack, check_images
from advkit.attacks.edges import EdgeModel, create_edge_model
from advkit.attacks.registry import register_attack
from advkit.attacks.transforms import diverse_input
from advkit.ops import kernel_filter
from advkit.utils import floating_dtype

VARIANTS = ("advkit", "paper")
LOSSES = ("margin", "ce")


def gaussian_kernels(images: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """The same normalized K×K Gaussian at every pixel: (B, K², H, W), the ablation's "Gau" denoiser."""
    r = torch.arange(size, dtype=torch.float32, device=images.device) - size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    g = (g / g.sum()).flatten()
    b, _, h, w = images.shape
    return g.view(1, -1, 1, 1).expand(b, -1, h, w).contiguous()


def add_gaussian_noise(images: torch.Tensor, sigma: float = 0.1, seed: int = 0) -> torch.Tensor:
    """The paper's noisy input: clip(images + N(0, σ²), 0, 1), reproducible with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g).to(images.device, images.dtype)
    return (images + sigma * noise).clamp(0, 1)


def check_options(variant: str, loss: str | None, refine: int | None, confidence: float, diversity: float,
                  *, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first bad advkit-variant option (as ``prefix`` + its name)."""
    if loss is not None and loss not in LOSSES:
        raise ValueError(f"unknown {prefix}loss {loss!r}; use {' or '.join(LOSSES)}")
    if refine is not None and refine < 0:
        raise ValueError(f"{prefix}refine must be >= 0, got {refine}")
    if confidence < 0 or (confidence > 0 and variant == "paper"):
        raise ValueError(f"{prefix}confidence must be >= 0 and needs the advkit variant, got {confidence:g} "
                         f"({variant})")
    if not 0 <= diversity <= 1 or (diversity > 0 and variant == "paper"):
        raise ValueError(f"{prefix}diversity must be in [0, 1] and needs the advkit variant, got {diversity:g} "
                         f"({variant})")


@register_attack
class Pasadena(Attack):
    """The adversarial denoise attack.

    Args:
        model: classifier over [0, 1] images.
        denoiser: a KPN denoiser (anything with ``kernels(x) → (B, K², H, W)`` and ``padding``), or
            ``"gaussian"`` for the ablation's fixed Gaussian kernels.
        edges: an edge model, or its name (``"sobel"``, the default: multi-scale Sobel; ``"canny"``:
            dilated Canny); ``None`` gives the flat mask M = sigmoid(−θ).
        lam: λ, the weight of the attack loss against the kernel-distance loss.
        theta: θ, the mask threshold.
        steps: T, the maximum number of iterations.
        alpha: α, the raw-gradient step (``variant="paper"``).
        kernel_step, weight_step: the normalized steps (``variant="advkit"``).
        variant: ``"advkit"`` (default) or ``"paper"``.
        loss: the attack term, ``"margin"`` or ``"ce"`` (default: margin for advkit, CE for paper).
        refine: bisection steps of the final line search (default: 8 for advkit, 0 for paper).
        confidence: κ ≥ 0 (advkit variant): an image is done once its margin (best other logit −
            logit of y) reaches κ, and the line search keeps a margin of at least κ; κ = 0 stops at
            the flip. A larger κ spends image quality on a more confident flip, which transfers
            better (CW's κ).
        diversity: probability of DIM's input transform (random shrink-and-pad, rate 0.9) on the
            image the attack loss sees at each step (advkit variant; 0 = off). As in DIM it makes
            the flip less specific to the source model; the done check and the line search use the
            plain image. The transform is drawn once per step for the whole batch, so with
            diversity > 0 an image's result depends on its batch.
        seed: seeds the random edge-weight initialisation.

    ``forward(noisy, labels=None)``: noisy (B, 3, H, W) in [0, 1] → X^a. Labels default to the
    model's predictions on ``noisy`` (Algorithm 1); `run` returns the details.
    """

    name = "pasadena"
    threat_norms = ()
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        denoiser: nn.Module | str,
        edges: EdgeModel | str | None = "sobel",
        *,
        lam: float = 0.9,
        theta: float = 0.45,
        steps: int | None = None,
        alpha: float = 0.1,
        kernel_step: float = 0.01,
        weight_step: float = 0.05,
        variant: str = "advkit",
        loss: str | None = None,
        refine: int | None = None,
        confidence: float = 0.0,
        diversity: float = 0.0,
        kernel_size: int = 5,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        check_options(variant, loss, refine, confidence, diversity)
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        for name, value in (("alpha", alpha), ("kernel_step", kernel_step), ("weight_step", weight_step)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        loss = loss if loss is not None else ("ce" if variant == "paper" else "margin")
        refine = refine if refine is not None else (0 if variant == "paper" else 8)
        self.loss, self.refine, self.confidence = loss, refine, float(confidence)
        self.diversity = float(diversity)
        self.denoiser = denoiser
        self.edges = create_edge_model(edges) if isinstance(edges, str) else edges
        self.lam, self.theta, self.alpha = lam, theta, alpha
        self.kernel_step, self.weight_step = kernel_step, weight_step
        self.variant = variant
        self.steps = steps if steps is not None else (10 if variant == "paper" else 50)
        self.kernel_size = kernel_size
        self.seed = seed
        self.padding = getattr(denoiser, "padding", "replicate") if not isinstance(denoiser, str) else "replicate"

    def denoise_kernels(self, noisy: torch.Tensor) -> torch.Tensor:
        if isinstance(self.denoiser, str):
            if self.denoiser != "gaussian":
                raise ValueError(f"unknown denoiser {self.denoiser!r}; use a KPN module or 'gaussian'")
            return gaussian_kernels(noisy, self.kernel_size)
        with torch.no_grad():
            kernels = self.denoiser.kernels(noisy.to(floating_dtype(self.denoiser) or noisy.dtype))
        if kernels.shape[1] != self.kernel_size**2:
            self.kernel_size = int(round(kernels.shape[1] ** 0.5))
        return kernels.float()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # (no eps, no init: the attack has no radius and no random start, so a caller passing
        # them, MultiAttack or DenoiseThenAttack, is told rather than ignored)
        return self.run(images, labels)["adv"]

    def run(self, noisy: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Attack ``noisy``; returns adv, denoised (the KPN output), mask, flipped, steps, labels."""
        check_images(noisy)
        noisy = noisy.detach().float()
        b = noisy.shape[0]
        y = self.resolve_labels(noisy, labels)
        k_n = self.denoise_kernels(noisy)
        edges = self.edges(noisy).to(noisy.device, torch.float32) if self.edges is not None else None
        n_maps = edges.shape[1] if edges is not None else 1
        # One random draw shared by the batch, so an image's result does not depend on its batch.
        g = torch.Generator().manual_seed(self.seed)
        w = torch.rand(1, n_maps, generator=g)
        w = (w / w.sum(1, keepdim=True)).expand(b, -1).contiguous().to(noisy.device)
        k_a = k_n.clone()

        def mask(weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            if edges is None:
                return torch.sigmoid(torch.full_like(noisy[idx, :1], -self.theta))
            return torch.sigmoid(torch.einsum("bn,bnhw->bhw", weights, edges[idx]).unsqueeze(1) - self.theta)

        def render(ka: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            m = mask(weights, idx)
            mixed = m * ka + (1 - m) * k_n[idx]
            return kernel_filter(noisy[idx], mixed, padding=self.padding)

        with torch.no_grad():
            denoised_raw = kernel_filter(noisy, k_n, padding=self.padding)
            denoised = denoised_raw.clamp(0, 1)
        adv = denoised.clone()
        flipped = torch.zeros(b, dtype=torch.bool, device=noisy.device)
        steps_used = torch.zeros(b, dtype=torch.long, device=noisy.device)
        active = torch.arange(b, device=noisy.device)
        if self.variant == "advkit":
            with torch.no_grad():
                logits = self.logits(denoised)
            flipped = logits.argmax(1) != y
            active = active[~self.reached(logits, y)]
        di_gen = torch.Generator().manual_seed(self.seed)
        for t in range(self.steps):
            if active.numel() == 0:
                break
            ka = k_a[active].detach().requires_grad_(True)
            wa = w[active].detach().requires_grad_(True)
            out = render(ka, wa, active)
            seen = diverse_input(out, 0.9, self.diversity, generator=di_gen) if self.diversity > 0 else out
            attack_loss = self.attack_loss(self.logits(seen), y[active])
            dist = (ka - k_n[active]).pow(2).flatten(1).sum(1)
            objective = (self.lam * attack_loss - (1 - self.lam) * dist).sum()
            # (a flat mask, edges=None, has no weights to learn: their gradient is zero)
            grad_k, grad_w = torch.autograd.grad(objective, [ka, wa], allow_unused=True, materialize_grads=True)
            with torch.no_grad():
                if self.variant == "paper":
                    k_a[active] = ka + self.alpha * grad_k
                    w[active] = wa + self.alpha * grad_w
                else:
                    scale_k = grad_k.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    scale_w = grad_w.abs().amax(1, keepdim=True).clamp_min(1e-12)
                    k_a[active] = ka + self.kernel_step * grad_k / scale_k
                    w[active] = wa + self.weight_step * grad_w / scale_w
                out = render(k_a[active], w[active], active).clamp(0, 1)
                adv[active] = out
                steps_used[active] = t + 1
                logits = self.logits(out)
                flipped[active] = logits.argmax(1) != y[active]
                active = active[~self.reached(logits, y[active])]
        if self.refine > 0:
            # images that reached the goal after at least one update (the rest keep their output)
            reached = torch.ones(b, dtype=torch.bool, device=noisy.device)
            reached[active] = False
            attacked = (reached & (steps_used > 0)).nonzero().flatten()
            if attacked.numel():
                with torch.no_grad():
                    raw = render(k_a[attacked], w[attacked], attacked)
                adv[attacked] = self.shortest_flip(denoised_raw[attacked], raw, y[attacked])
        with torch.no_grad():
            final_mask = mask(w, torch.arange(b, device=noisy.device))
        return {"adv": adv, "denoised": denoised, "mask": final_mask, "flipped": flipped, "steps": steps_used,
                "labels": y}

    def reached(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Whether each image is done: flipped (paper, κ = 0), or flipped with margin ≥ κ."""
        flipped = logits.argmax(1) != labels
        if self.confidence == 0:
            return flipped
        return flipped & (self.margin(logits, labels) >= self.confidence)

    @staticmethod
    def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """max_{j≠y} z_j − z_y per image: positive once the prediction is no longer y."""
        true = logits.gather(1, labels[:, None]).squeeze(1)
        return logits.scatter(1, labels[:, None], float("-inf")).amax(1) - true

    def attack_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-image loss to ascend: CE, or the margin max_{j≠y} z_j − z_y (positive once flipped)."""
        if self.loss == "ce":
            return F.cross_entropy(logits, labels, reduction="none")
        return self.margin(logits, labels)

    @torch.no_grad()
    def shortest_flip(self, start: torch.Tensor, end: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The output nearest ``start`` on the segment start + s·(end − start), s ∈ (0, 1], that is still done.

        ``start`` and ``end`` are the unclamped filter outputs of K^n and of the mixed adversarial
        kernels (the op is linear in the kernels, so the segment is exactly the kernels' segment);
        ``end`` is done (`reached`). Bisection keeps the smallest such s found in ``refine`` steps.
        """
        lo = torch.zeros(len(start), device=start.device)
        hi = torch.ones(len(start), device=start.device)
        for _ in range(self.refine):
            mid = (lo + hi) / 2
            out = (start + mid.view(-1, 1, 1, 1) * (end - start)).clamp(0, 1)
            ok = self.reached(self.logits(out), labels)
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        # s = 1 returns ``end`` itself: start + (end − start) can differ from it in the last bit
        moved = torch.where((hi == 1).view(-1, 1, 1, 1), end, start + hi.view(-1, 1, 1, 1) * (end - start))
        return moved.clamp(0, 1)

    def config(self) -> dict[str, Any]:
        edges = (None if self.edges is None else
                 self.edges.config() if hasattr(self.edges, "config") else type(self.edges).__name__)
        denoiser = self.denoiser if isinstance(self.denoiser, str) else getattr(self.denoiser, "config", "kpn")
        return {
            **super().config(), "variant": self.variant, "lam": self.lam, "theta": self.theta, "steps": self.steps,
            "alpha": self.alpha, "kernel_step": self.kernel_step, "weight_step": self.weight_step,
            "loss": self.loss, "refine": self.refine, "confidence": self.confidence,
            "diversity": self.diversity, "kernel_size": self.kernel_size, "edges": edges, "denoiser": denoiser,
            "seed": self.seed,
            "labels": "model prediction on the noisy input",
        }

"""SPSA, L∞ (Uesato et al., ICML 2018, "Adversarial risk and the dangers of evaluating against weak attacks").

A gradient-free attack: it estimates the gradient of the margin loss from finite differences along
random ±1 directions (simultaneous perturbation stochastic approximation) and feeds the estimate to
Adam. Like the Square Attack it reads the model's outputs only, so a defense whose gradient is
masked, shattered or absent (quantization, JPEG, randomness) cannot hide behind it; its cost is
2 · ``samples`` forward passes per image and step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, DeviceGenerators, check_counts
from advkit.attacks.registry import register_attack


@register_attack
class SPSA(Attack):
    """SPSA with Adam on the margin loss, L∞ (untargeted or targeted).

    Each step estimates ∇ₓ of the margin z_y − max_{j≠y} z_j (targeted: max_{j≠t} z_j − z_t) as
    the mean over ``samples`` Rademacher directions v of (L(x + δv) − L(x − δv)) / (2δ) · v, takes
    an Adam step of learning rate ``lr`` down it, and projects onto the eps-ball and [0, 1]. The
    directions are shared by the images of a batch (as in advertorch's and torchattacks' SPSA;
    every image's estimate is still unbiased).

    Args:
        model: classifier over [0, 1] images; only its outputs are used (under ``no_grad``).
        eps: L∞ radius on the [0, 1] scale (a per-sample tensor may be passed to ``forward``).
        steps: Adam iterations (default 100; Uesato et al. ran 100 to 2000 on CIFAR-10).
        samples: directions per gradient estimate (default 128; torchattacks' default).
        delta: finite-difference step δ (default 0.01).
        lr: Adam's learning rate (default 0.01).
        sample_batch: directions evaluated in one forward pass (× the batch size), for memory.
        early_stop: stop moving an image once it is misclassified (targeted: reaches the target)
            and return that point (default True: what an evaluation wants, and fewer queries);
            False runs every step, as torchattacks' ``SPSA``.
        clip_probes: clip the probes x ± δv to [0, 1] (default True): a black box takes images
            only, and a defense in front of the model may refuse anything else. False lets them
            leave [0, 1] by δ, as advertorch's and torchattacks' SPSA do (the cross-check's setting).
        seed: seeds the attack's own generator for the directions (one per device; it advances
            with every call, so two attacks built with the same seed give the same results call
            for call).
        precision, channels_last, targeted: see `Attack`.

    ``forward(images, labels=None, eps=None)``: images (B, C, H, W) in [0, 1]; labels (B,) or None
    (the model's predictions), target classes when ``targeted``. Returns (B, C, H, W) in [0, 1].
    """

    name = "spsa"
    black_box = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        samples: int = 128,
        delta: float = 0.01,
        lr: float = 0.01,
        sample_batch: int = 64,
        early_stop: bool = True,
        clip_probes: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        check_counts(steps=steps, samples=samples, sample_batch=sample_batch)
        if not (delta > 0 and math.isfinite(delta)):
            raise ValueError(f"delta must be a positive number, got {delta}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr}")
        self.eps = eps
        self.steps = steps
        self.samples = samples
        self.delta = delta
        self.lr = lr
        self.sample_batch = sample_batch
        self.early_stop = early_stop
        self.clip_probes = clip_probes
        self.seed = seed
        self._generators = DeviceGenerators(seed)

    def margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) loss SPSA descends: z_y − max_{j≠y} z_j, or max_{j≠t} z_j − z_t when targeted."""
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        return others - label_logit if self.targeted else label_logit - others

    @torch.no_grad()
    def estimate_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The SPSA estimate of ∇ₓ `margin` at ``images`` (B, C, H, W), float32, same shape."""
        b = images.shape[0]
        generator = self._generators(images.device)
        total = torch.zeros_like(images)
        repeated = labels.repeat(self.sample_batch)
        done = 0
        while done < self.samples:
            n = min(self.sample_batch, self.samples - done)
            signs = torch.empty((n, 1, *images.shape[1:]), device=images.device)
            signs = signs.bernoulli_(0.5, generator=generator).mul_(2).sub_(1)  # ±1, one per direction
            step = (self.delta * signs).expand(n, b, *images.shape[1:])
            up, down = images[None] + step, images[None] - step
            if self.clip_probes:  # the quotient keeps 2δ where a probe was clipped, as advertorch's
                up, down = up.clamp(0, 1), down.clamp(0, 1)
            up, down = up.flatten(0, 1), down.flatten(0, 1)
            diff = self.margin(self.logits(up), repeated[: n * b]) - self.margin(self.logits(down), repeated[: n * b])
            # (L(x + δv) − L(x − δv)) / (2δ v), and 1/v = v for v = ±1
            total += (diff.view(n, b, 1, 1, 1) / (2 * self.delta) * signs).sum(0)
            done += n
        return total / self.samples

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        x0, labels, eps_t = self.prepare(images, labels, eps)
        delta = torch.zeros_like(x0)
        # Adam's moments, with torch.optim.Adam's defaults (β = 0.9, 0.999, ε = 1e-8) and update form
        exp_avg = torch.zeros_like(x0)
        exp_avg_sq = torch.zeros_like(x0)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        active = torch.arange(x0.shape[0], device=x0.device)
        if self.early_stop:
            active = active[~self.succeeded(self.logits(x0), labels)]
        for t in range(1, self.steps + 1):
            if active.numel() == 0:
                break
            x = x0[active] + delta[active]
            grad = self.estimate_gradient(x, labels[active])
            m = exp_avg[active].mul_(beta1).add_(grad, alpha=1 - beta1)
            v = exp_avg_sq[active].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            exp_avg[active], exp_avg_sq[active] = m, v
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(adam_eps)
            moved = delta[active].addcdiv_(m, denom, value=-self.lr / (1 - beta1**t))
            moved = moved.clamp(-eps_t[active], eps_t[active])
            delta[active] = (x0[active] + moved).clamp(0, 1) - x0[active]
            if self.early_stop:
                hit = self.succeeded(self.logits(x0[active] + delta[active]), labels[active])
                active = active[~hit]
        return (x0 + delta).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "norm": "linf",
            "eps": self.eps,
            "steps": self.steps,
            "samples": self.samples,
            "delta": self.delta,
            "lr": self.lr,
            "early_stop": self.early_stop,
            "clip_probes": self.clip_probes,
            "loss": "margin",
            "seed": self.seed,
        }

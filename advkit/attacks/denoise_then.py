"""Denoise then attack (Pasadena's Denoise+X baselines): denoise the noisy input, then attack that."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, check_images
from advkit.precision import precision_scope
from advkit.utils import floating_dtype


def _has_training_mode_layers(module: nn.Module) -> bool:
    """Whether any layer whose output differs between train and eval mode is in train mode."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, kinds) and m.training for m in module.modules())


class DenoiseThenAttack(Attack):
    """Run ``denoiser`` on the input, then ``attack`` on the denoised image.

    Args:
        denoiser: any callable mapping (B, C, H, W) images in [0, 1] to images of the same shape
            (e.g. a KPN from `advkit.models.denoisers`, in eval mode); its output is clamped to [0, 1].
            It runs without gradients in strict fp32, whatever the attack's precision, so the
            denoised image (the centre of the eps-ball and the reference for image quality) does
            not depend on it.
        attack: the attack applied to the denoised image (its model, precision and channels_last
            are this wrapper's).

    ``forward(images, labels=None, eps=None, init=None)``: images (B, C, H, W) in [0, 1], the noisy
    input; labels (B,) or None — the model's prediction on the *input* images (Pasadena's label
    y = φ(X^n), so that success means the prediction changed from the one on the noisy input);
    eps and init are passed to ``attack`` (a `ValueError` where it takes none). Returns the attacked denoised images, within eps (L∞) of
    ``denoise(images)``, not of ``images``.
    """

    name = "denoise_then_attack"

    def __init__(self, denoiser: Callable[[torch.Tensor], torch.Tensor], attack: Attack) -> None:
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable, got {type(denoiser).__name__}")
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an advkit Attack, got {type(attack).__name__}")
        super().__init__(attack.model, precision=attack.precision, channels_last=attack.channels_last,
                         targeted=attack.targeted)
        self.denoiser = denoiser
        self.attack = attack
        if isinstance(denoiser, nn.Module) and _has_training_mode_layers(denoiser):
            warnings.warn(
                "the denoiser has batch-norm or dropout layers in training mode, so its output depends on "
                "the batch and on chance; call .eval() on it",
                stacklevel=2,
            )

    @torch.no_grad()
    def denoise(self, images: torch.Tensor) -> torch.Tensor:
        """The denoiser's output for ``images`` (B, C, H, W) in [0, 1], float32, clamped to [0, 1]."""
        check_images(images)
        with precision_scope("fp32", images.device):
            out = self.denoiser(images.detach().to(floating_dtype(self.denoiser) or torch.float32))
        if not isinstance(out, torch.Tensor) or out.shape != images.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the denoiser must return a tensor of the input's shape {tuple(images.shape)}, got {got}")
        return out.float().clamp(0, 1)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: float | torch.Tensor | None = None,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_images(images)
        x = images.detach().float()
        labels = self.resolve_labels(x, labels)
        # Only what the attack takes: the minimum-norm attacks (CW, DeepFool) have no radius, and
        # the attacks with their own random draws (FAB, Square, ...) take no caller's start.
        extra: dict[str, Any] = {}
        for keyword, value in (("eps", eps), ("init", init)):
            if value is None:
                continue
            if not self.attack.forward_takes(keyword):
                raise ValueError(f"{self.attack.name} takes no {keyword}")
            extra[keyword] = value
        return self.attack(self.denoise(x), labels, **extra)

    def config(self) -> dict[str, Any]:
        denoiser_cfg = getattr(self.denoiser, "config", None)
        if not isinstance(denoiser_cfg, dict):
            # a function's own name, else its class (a module without a config, a callable object)
            denoiser_cfg = {"callable": getattr(self.denoiser, "__qualname__", type(self.denoiser).__qualname__)}
        return {**super().config(), "denoiser": dict(denoiser_cfg), "attack": self.attack.config()}

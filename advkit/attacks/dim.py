"""Diverse-inputs method (Xie et al., 2019), momentum version (M-DI²-FGSM), L∞ (untargeted or targeted)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.registry import register_attack
from advkit.attacks.transforms import DiverseInput


@register_attack
class DIM(MIFGSM):
    """DIM: MI-FGSM whose gradient is taken through a random resize-and-pad of the input.

    With ``decay = 1`` (the default) this is the paper's M-DI²-FGSM, the "DIM" of the TI paper and
    of Pasadena's tables; ``decay = 0`` gives DI²-FGSM (torchattacks' ``DIFGSM`` default).

    Args:
        model: classifier over [0, 1] images.
        eps, steps, decay, step: as in `MIFGSM` (defaults 8/255, 10, 1.0, eps/steps).
        resize_rate: 0.9 (default) shrinks to a random size in [⌊0.9·W⌋, W) and zero-pads back to
            H×W at a random offset (torchattacks' semantics); > 1 enlarges and pads as in the
            paper, then resizes back to H×W (see `advkit.attacks.transforms.diverse_input`).
        diversity_prob: probability of transforming the input at each step (default 0.5).
        seed: seeds the attack's own generator for the transform's draws; one transform per step
            for the whole batch, as in the paper. The generator advances with every call, so two
            attacks built with the same seed give the same results call for call.

    ``forward(images, labels=None, eps=None, init=None)`` as in `MIFGSM`.
    """

    name = "dim"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        decay: float = 1.0,
        resize_rate: float = 0.9,
        diversity_prob: float = 0.5,
        seed: int = 0,
        step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps=eps, steps=steps, decay=decay, step=step, **kwargs)
        if not 0.0 <= diversity_prob <= 1.0:  # (checked here too, so the message names this option)
            raise ValueError(f"diversity_prob must be in [0, 1], got {diversity_prob}")
        self.diversity = DiverseInput(resize_rate, diversity_prob, seed)
        self.resize_rate = resize_rate
        self.diversity_prob = diversity_prob
        self.seed = seed

    def transform_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.diversity(images)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "resize_rate": self.resize_rate,
            "diversity_prob": self.diversity_prob,
            "seed": self.seed,
        }

"""Attacks in sequence, each on the images the earlier ones left (torchattacks' ``MultiAttack``,
and the loop of AutoAttack): robust accuracy is what survives them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advkit.attacks.base import Attack, as_eps_tensor


class MultiAttack(Attack):
    """Run ``attacks`` in turn, each on the images no earlier one has fooled.

    Args:
        attacks: advkit attacks, all untargeted or all targeted (success is judged as they judge it).
        model: the classifier that judges success (default: the first attack's model).
        precision, channels_last: for that judgement; each attack keeps its own.

    ``forward(images, labels=None, eps=None)``: images (B, C, H, W) in [0, 1], labels (B,) (None:
    the model's predictions; target classes for targeted attacks). ``eps`` (scalar or (B,)), where
    given, goes to every attack that takes a radius; otherwise each uses its own. Returns
    (B, C, H, W) in [0, 1]: for each image the first successful attack's output, the input where
    none succeeded (so the model's accuracy on the output is the robust accuracy against the
    ensemble). After a call ``history`` lists (attack label, robust accuracy after it), starting
    with ("clean", accuracy on the input); for targeted attacks "robust" counts images not yet at
    their target.
    """

    name = "multiattack"

    def __init__(self, attacks: Sequence[Attack], model: nn.Module | None = None, **kwargs: Any) -> None:
        attacks = list(attacks)
        if not attacks:
            raise ValueError("MultiAttack needs at least one attack")
        if not all(isinstance(a, Attack) for a in attacks):
            raise TypeError("MultiAttack takes advkit Attack instances")
        modes = {a.targeted for a in attacks}
        if len(modes) > 1:
            raise ValueError("MultiAttack's attacks must be all untargeted or all targeted")
        super().__init__(model if model is not None else attacks[0].model, **kwargs)
        self.targeted = modes.pop()
        # a plain list, not a ModuleList: the attacks share `model`, registered once above
        self.attacks = attacks
        # A radius given to the call is checked by each attack that takes it; here only against the
        # widest of them (an L2 radius may exceed 1).
        self.max_eps = max(a.max_eps for a in attacks)
        self.history: list[tuple[str, float]] = []

    def label(self, attack: Attack) -> str:
        """The name ``history`` gives ``attack``."""
        return attack.name

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        x0, labels = self.prepare_batch(images, labels)
        radius = self.eps if eps is None else eps
        eps_t = None if radius is None else as_eps_tensor(radius, x0.shape[0], x0, self.max_eps).flatten()
        with torch.no_grad():
            clean = self.logits(x0)
        for attack in self.attacks:
            # before any attack runs: APGD-T needs 4 classes, and AutoAttack would fail at its second stage
            if x0.shape[0] and clean.shape[1] < attack.min_classes:
                raise ValueError(f"{self.label(attack)} needs a model of at least {attack.min_classes} classes; "
                                 f"this one has {clean.shape[1]}")
        fooled = self.succeeded(clean, labels)
        out = x0.clone()
        n = x0.shape[0]

        def robust() -> float:
            return (n - int(fooled.sum())) / max(n, 1)

        self.history = [("clean", robust())]
        for stage, attack in enumerate(self.attacks):
            # The first attack sees the whole batch (it skips misclassified images itself where it
            # can), so it draws the same random starts as when it runs alone; later ones see what is left.
            todo = (~fooled if stage else torch.ones_like(fooled)).nonzero().squeeze(1)
            if todo.numel():
                if eps_t is not None and attack.forward_takes("eps"):
                    adv = attack(x0[todo], labels[todo], eps=eps_t[todo])
                else:
                    adv = attack(x0[todo], labels[todo])
                with torch.no_grad():
                    hit = self.succeeded(self.logits(adv), labels[todo])
                out[todo[hit]] = adv[hit]
                fooled[todo[hit]] = True
            self.history.append((self.label(attack), robust()))
        return out

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        for attack in self.attacks:  # (a plain list, so `modules()` does not reach them)
            attack.reseed(seed)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "attacks": [a.config() for a in self.attacks]}

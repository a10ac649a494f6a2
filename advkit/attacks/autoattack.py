"""AutoAttack (Croce & Hein, 2020): diverse parameter-free attacks in sequence,
each on the images the earlier ones left correctly classified; robust accuracy is what survives all."""

from __future__ import annotations

from typing import Any

from torch import nn

from advkit.attacks.apgd import APGD
from advkit.attacks.apgdt import APGDT
from advkit.attacks.base import Attack
from advkit.attacks.fab import FABT
from advkit.attacks.multiattack import MultiAttack
from advkit.attacks.registry import register_attack
from advkit.attacks.square import Square

VERSIONS = ("standard", "fast", "rand")
# AutoAttack's rand version averages each APGD gradient over this many draws of the model.
RAND_EOT_SAMPLES = 20


@register_attack
class AutoAttack(MultiAttack):
    """APGD-CE, APGD-T, FAB-T and Square (``standard``, AutoAttack's standard version), APGD-CE
    and APGD-DLR (``fast``), or APGD-CE and APGD-DLR with EOT over 20 draws (``rand``, AutoAttack's
    version for randomized defenses), L∞ or L2.

    Args:
        model: classifier over [0, 1] images.
        eps: radius in ``norm`` on the [0, 1] scale (a per-sample tensor may be passed to
            ``forward``). 8/255 is the L∞ CIFAR-10 radius; RobustBench's L2 one is 0.5.
        norm: ``linf`` (default) or ``l2``: every stage attacks in that ball (AutoAttack's ``norm``).
        version: ``standard``, ``fast`` or ``rand``.
        steps: APGD and FAB iterations (100, AutoAttack's), per target for APGD-T and FAB-T.
        n_targets: APGD-T's and FAB-T's target classes (9).
        queries: Square's query budget (5000).
        eot_samples: forward/backward passes each APGD gradient averages (None: 20 for ``rand``,
            1 otherwise); see `Attack.expected_gradient`.
        seed: seeds every attack's random starts and squares.
        precision, channels_last: passed to every attack.

    ``forward(images, labels, eps=None)``: images (B, C, H, W) in [0, 1], labels (B,) true classes
    (None: the model's predictions). Returns (B, C, H, W) in [0, 1]: the first attack's successful
    image where one succeeded, the clean image elsewhere (as AutoAttack), so the model's accuracy
    on the output is the robust accuracy. After a call, ``history`` lists (attack name, robust
    accuracy after it), starting with ("clean", clean accuracy). The loop is `MultiAttack`'s.
    """

    name = "autoattack"
    supports_targeted = False
    threat_norms = ("linf", "l2")

    def __init__(self, model: nn.Module, eps: float = 8 / 255, version: str = "standard", steps: int = 100,
                 n_targets: int = 9, queries: int = 5000, seed: int = 0, eot_samples: int | None = None,
                 norm: str = "linf", **kwargs: Any) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown version {version!r}; use {', '.join(VERSIONS)}")
        if eot_samples is None:
            eot_samples = RAND_EOT_SAMPLES if version == "rand" else 1
        common = {"eps": eps, "seed": seed, "norm": norm, **kwargs}  # (each stage checks the norm)
        # Early stop is AutoAttack's economy on a deterministic model; with EOT an image whose mean
        # logits just crossed the boundary is still right under many single draws, so run on.
        apgd = {**common, "steps": steps, "eot_samples": eot_samples, "early_stop": eot_samples == 1}
        attacks: list[Attack] = [APGD(model, loss="ce", **apgd)]
        if version == "standard":
            attacks += [APGDT(model, n_targets=n_targets, **apgd),
                        FABT(model, steps=steps, n_targets=n_targets, **common),
                        Square(model, queries=queries, **common)]
        else:
            attacks.append(APGD(model, loss="dlr", **apgd))
        super().__init__(attacks, model, **kwargs)
        self.eps = eps
        self.version = version
        self.set_norm(norm)

    def label(self, attack: Attack) -> str:
        return f"apgd-{attack.loss}" if type(attack) is APGD else attack.name

    def config(self) -> dict[str, Any]:
        config = {**super().config(), "norm": self.norm, "eps": self.eps, "version": self.version,
                  "attacks": [a.config() for a in self.attacks]}
        for sub in config["attacks"]:
            sub.pop("eps", None)
        return config

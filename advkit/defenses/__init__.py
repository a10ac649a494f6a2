"""Input defenses on [0, 1] NCHW images: AdvFilter denoisers and classical baselines.

`create_defense(name)` builds any of them by name: ``advfilter`` (the shipped Filt default),
``pafilt`` (the shipped PA-Filt), a shipped denoiser name or checkpoint path, ``jpeg``,
``smoothing``, ``bitdepth``, ``tvm`` or ``none``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from advkit.defenses.advfilter import AdvFilter, DefendedClassifier
from advkit.defenses.evaluate import evaluate_on_store, recovered_fraction, store_rows

CLASSICAL_DEFENSES = ("jpeg", "smoothing", "bitdepth", "tvm")


def create_defense(name: str, **kwargs: Any) -> nn.Module:
    """Build a defense by name (see the module docstring); ``kwargs`` go to its constructor."""
    from advkit.defenses import classical

    if name == "none":
        return nn.Identity()
    if name == "advfilter":
        return AdvFilter("default", **kwargs)
    if name == "pafilt":
        return AdvFilter("advfilter-cifar10-pafilt", **kwargs)
    table = {
        "jpeg": classical.JPEGDefense,
        "smoothing": classical.SmoothingDefense,
        "bitdepth": classical.BitDepthDefense,
        "tvm": classical.TVMDefense,
    }
    if name in table:
        return table[name](**kwargs)
    return AdvFilter(name, **kwargs)


def is_differentiable(defense: nn.Module) -> bool:
    """False for defenses that fall back to BPDA gradients."""
    return bool(getattr(defense, "differentiable", True))


def gradient_kind(defense: nn.Module) -> str:
    """How an adaptive attack differentiates ``defense``: ``exact``, ``BPDA`` (identity backward)
    or ``BPDA (<stand-in>)`` (the gradient of a differentiable approximation)."""
    return str(getattr(defense, "gradient", "exact" if is_differentiable(defense) else "BPDA"))


__all__ = [
    "CLASSICAL_DEFENSES",
    "AdvFilter",
    "DefendedClassifier",
    "create_defense",
    "evaluate_on_store",
    "gradient_kind",
    "is_differentiable",
    "recovered_fraction",
    "store_rows",
]

"""AdvFilter for ART users: a `PreprocessorPyTorch` to put in front of a `PyTorchClassifier`."""

from __future__ import annotations

from typing import Any

import torch

try:
    from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
except ImportError as exc:  # pragma: no cover  (ART is a dependency; this names it if missing)
    raise ImportError("advkit.defenses.art_adapter needs adversarial-robustness-toolbox") from exc

from advkit.defenses.advfilter import AdvFilter


class AdvFilterPreprocessor(PreprocessorPyTorch):
    """ART preprocessor that denoises with an `AdvFilter` (differentiable, so ART's white-box
    attacks on ``PyTorchClassifier(..., preprocessing_defences=[this])`` go through the filter).

    Args:
        advfilter: an `AdvFilter`, or anything `AdvFilter` accepts (name or checkpoint path).
        device_type: ``"cpu"`` or ``"gpu"`` as in ART.

    Inputs are NCHW float arrays in [0, 1] (``clip_values=(0, 1)`` on the classifier).
    """

    def __init__(
        self, advfilter: AdvFilter | str = "default", device_type: str = "gpu", apply_fit: bool = False,
        apply_predict: bool = True,
    ) -> None:
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        self.advfilter = advfilter if isinstance(advfilter, AdvFilter) else AdvFilter(advfilter)
        self.advfilter.to(self.device)

    def forward(self, x: torch.Tensor, y: Any | None = None) -> tuple[torch.Tensor, Any | None]:
        return self.advfilter(x.float()), y

    def fit(self, x: Any, y: Any = None, **kwargs: Any) -> None:
        """Nothing to fit: the denoiser is pretrained."""

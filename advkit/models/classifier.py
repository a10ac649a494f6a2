"""`Classifier`: a network wrapped so it takes [0, 1] RGB NCHW images and normalizes inside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advkit.utils import floating_dtype


class Classifier(nn.Module):
    """A classifier over [0, 1] images.

    Args:
        net: the bare network, which expects inputs normalized by ``mean``/``std``.
        mean, std: per-channel normalization applied inside ``forward``.
        name: registry name; ``weights_sha256``: hash of the weights file that was loaded.

    ``forward(images)``: images (B, 3, H, W) float in [0, 1] → logits (B, num_classes).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        name: str = "custom",
        dataset: str = "custom",
        num_classes: int | None = None,
        input_size: tuple[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        weights_sha256: str | None = None,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.name = name
        self.dataset = dataset
        self.num_classes = num_classes
        self.input_size = input_size
        self.class_names = list(class_names) if class_names is not None else None
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{self.name}: expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
            )
        return self.net(self.normalize(images))

    @property
    def identity(self) -> str:
        """``name`` plus the weights hash, as recorded in stores and results."""
        return f"{self.name}@sha256:{self.weights_sha256}" if self.weights_sha256 else self.name

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dataset={self.dataset!r}"


def strict_fp32_predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images).argmax(1)`` in strict float32 (TF32 off for the call): the predictions pair
    stores hold, which never depend on an attack's precision or the GPU's matmul setting. A model
    cast to another dtype (``.double()``, ``.half()``) is fed its own dtype, as the attacks do."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            return model(images.to(floating_dtype(model) or torch.float32)).argmax(1)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

"""Helpers shared by the attack tests: accuracy, and wrappers that break a model's gradient."""

from __future__ import annotations

import torch
from torch import nn


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


class Quantized(nn.Module):
    """``model`` on its input rounded to 8 bits: the same predictions, a zero input gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(images * 255) / 255)


class Scaled(nn.Module):
    """``model``'s logits times ``factor``: the same predictions, a softmax saturated in float32."""

    def __init__(self, model: nn.Module, factor: float = 1000.0) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images) * self.factor

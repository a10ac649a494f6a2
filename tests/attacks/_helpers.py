"""Helpers shared by the attack tests: accuracy, wrappers that break a model's gradient or count its
queries, and an affine problem whose nearest boundaries are known exactly."""

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


def affine_nearest_boundary(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dual_p: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``model`` = Sequential(Flatten, Linear) and images away from the box edges: each image's
    nearest boundary in the norm whose dual is ``dual_p`` (1 for L∞, 2 for L2), as (B,) tensors
    (distance, margin z_y − z_c, size ‖w_y − w_c‖_dual), distance = margin / size: the exact
    least distance to any other class, known in closed form."""
    weight = model[1].weight.detach()
    with torch.no_grad():
        z = model(x)
    margin = z.gather(1, y[:, None]) - z
    size = (weight[y][:, None, :] - weight[None]).norm(p=dual_p, dim=2)
    distance = (margin / size).scatter(1, y[:, None], torch.inf)
    nearest = distance.argmin(1, keepdim=True)
    return tuple(t.gather(1, nearest).squeeze(1) for t in (distance, margin, size))


def affine_problem(side: int, n: int, low: float, high: float, classes: int = 4) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded affine classifier Sequential(Flatten, Linear) over 3×side×side images, ``n`` images
    uniform in [low, high] (kept off the box edges so the exact nearest boundaries apply), and the
    model's labels for them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, classes)).eval()
    torch.manual_seed(1)
    x = torch.rand(n, 3, side, side) * (high - low) + low
    with torch.no_grad():
        return model, x, model(x).argmax(1)


class Counting(nn.Module):
    """``model``, counting the images it is shown (an attack's query count)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)

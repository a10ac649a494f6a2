"""A tiny classifier for the attacks' unit tests (4 classes, any image size)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """A small classifier whose prediction depends on the image: uniform noise images spread over
    all 4 classes, and PGD at 8/255 changes about a third of them on 8×8 images (half at 16×16).

    The input is averaged into 4×4 cells and standardized by the cell's pixel count, so any image
    size gives logits of one scale; weights are drawn from a fixed generator, biases small. (A
    conv + global-mean model gives every noise image the same class by a wide margin, and then no
    attack fools anything and the tests of what a fooled image looks like check nothing.)
    """

    cells = 4

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * self.cells**2, 4)
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.ndim > 1 else 100
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)

    def forward(self, x):
        per_cell = x.shape[-2] * x.shape[-1] / self.cells**2
        cells = F.adaptive_avg_pool2d(x - 0.5, self.cells) * (12 * per_cell) ** 0.5
        return self.fc(self.conv(cells).relu().flatten(1))


@pytest.fixture(scope="module")
def tiny():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def resnet20_cifar(cifar_first_100, weights_dir):
    """The pretrained resnet20 (eval) and the first 10 CIFAR-10 test images of each class."""
    from advkit.models import create_classifier

    x, y = cifar_first_100
    return create_classifier("resnet20").eval(), x, y


@pytest.fixture(scope="module")
def cifar_setup(cifar_first_100, weights_dir):
    """The pretrained resnet20, the first 10 CIFAR-10 test images of each class and its predictions."""
    from advkit.models import create_classifier

    x, _ = cifar_first_100
    model = create_classifier("resnet20")
    with torch.no_grad():
        pred = model(x).argmax(1)
    return model, x, pred


@pytest.fixture(scope="module")
def affine(problem):
    """The affine classifier of the module's ``problem`` fixture (`_helpers.affine_problem`)."""
    return problem[0]


@pytest.fixture(scope="module")
def batch(problem):
    """(images, labels) of the module's ``problem`` fixture."""
    return problem[1:]

"""A tiny classifier for the attacks' unit tests (4 classes, any image size)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


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

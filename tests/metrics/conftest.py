"""Fixtures of real images for the metric tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def cifar_uint8(cifar_test_npz) -> tuple[np.ndarray, np.ndarray]:
    """The whole CIFAR-10 test set, (10000, 32, 32, 3) uint8 and labels."""
    d = np.load(cifar_test_npz)
    return d["x"], d["y"]


@pytest.fixture(scope="session")
def cifar_pairs(cifar_uint8) -> tuple[np.ndarray, np.ndarray]:
    """16 CIFAR images (float64 NHWC in [0, 1]) and noisy copies (σ = 0.1, clipped), fixed seed."""
    x, _ = cifar_uint8
    clean = x[::625][:16].astype(np.float64) / 255
    rng = np.random.default_rng(7)
    noisy = np.clip(clean + rng.normal(0.0, 0.1, clean.shape), 0.0, 1.0)
    return clean, noisy

"""Helpers for the metric tests: scikit-image's bundled photographs, noise, tensor layout."""

from __future__ import annotations

import numpy as np
import torch

# Photographs that ship inside scikit-image (no download): four RGB, one grey.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket")
NOISE_SIGMAS = (0.0, 0.05, 0.1)


def photo_uint8(name: str) -> np.ndarray:
    """A scikit-image sample photo as uint8 HxW or HxWx3."""
    import skimage.data

    return np.asarray(getattr(skimage.data, name)())


def with_noise_uint8(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``image`` plus N(0, sigma²) on the [0, 1] scale, clipped and rounded back to uint8."""
    if sigma == 0:
        return image
    rng = np.random.default_rng(seed)
    noisy = np.clip(image / 255.0 + rng.normal(0.0, sigma, image.shape), 0.0, 1.0)
    return np.floor(noisy * 255 + 0.5).astype(np.uint8)


def to_nchw(image: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 HxW / HxWxC → (1, C, H, W) float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(dtype) / 255
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def nhwc_to_nchw(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(dtype)

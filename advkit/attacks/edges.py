"""Edge maps for Pasadena's perceptual region localization, with classical detectors from scikit-image.

An edge model is any callable ``images (B, 3, H, W) in [0, 1] → edges (B, N, H, W) in [0, 1]``
(N scales). The paper uses BDCN, a learned detector that would need a weight download; offline,
advkit's default is multi-scale Sobel gradient magnitude (soft maps, like BDCN's side outputs),
and the ablation's Canny edges dilated to a width of 3–9 pixels are available too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage
from skimage import color, feature, filters


class EdgeModel(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _grey(images: torch.Tensor) -> np.ndarray:
    """(B, H, W) float64 luminance of [0, 1] RGB images."""
    arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    return np.stack([color.rgb2gray(a) for a in arr])


class SobelEdges:
    """Sobel gradient magnitude after Gaussian smoothing at several scales, each map scaled to [0, 1].

    Args:
        sigmas: Gaussian scales (pixels), one output map each.
    """

    def __init__(self, sigmas: Sequence[float] = (0.5, 1.0, 2.0)) -> None:
        self.sigmas = tuple(float(s) for s in sigmas)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        grey = _grey(images)
        maps = np.zeros((len(grey), len(self.sigmas), *grey.shape[1:]), dtype=np.float32)
        for b, g in enumerate(grey):
            for i, s in enumerate(self.sigmas):
                mag = filters.sobel(filters.gaussian(g, sigma=s, mode="reflect"))
                peak = mag.max()
                maps[b, i] = mag / peak if peak > 0 else 0.0
        return torch.from_numpy(maps).to(images.device)

    def config(self) -> dict:
        return {"name": "sobel", "sigmas": list(self.sigmas)}


class CannyEdges:
    """Canny edges (one scale) dilated to ``width`` pixels: the paper's ablation (CannyW 3–9)."""

    def __init__(self, sigma: float = 1.0, width: int = 3) -> None:
        if width < 1 or width % 2 == 0:
            raise ValueError(f"Canny dilation width must be a positive odd number, got {width}")
        self.sigma, self.width = float(sigma), int(width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        grey = _grey(images)
        out = np.zeros((len(grey), 1, *grey.shape[1:]), dtype=np.float32)
        structure = np.ones((self.width, self.width), dtype=bool)
        for b, g in enumerate(grey):
            edges = feature.canny(g, sigma=self.sigma)
            out[b, 0] = ndimage.binary_dilation(edges, structure=structure) if self.width > 1 else edges
        return torch.from_numpy(out).to(images.device)

    def config(self) -> dict:
        return {"name": "canny", "sigma": self.sigma, "width": self.width}


def create_edge_model(name: str, **kwargs: object) -> EdgeModel:
    """``sobel`` (default, multi-scale) or ``canny`` (dilated)."""
    from advkit.errors import UnknownNameError

    if name == "sobel":
        return SobelEdges(**kwargs)  # type: ignore[arg-type]
    if name == "canny":
        return CannyEdges(**kwargs)  # type: ignore[arg-type]
    raise UnknownNameError(f"unknown edge model {name!r}; known: sobel, canny")

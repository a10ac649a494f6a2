"""Edge maps for Pasadena's perceptual region localization, with classical detectors.

An edge model is any callable ``images (B, 3, H, W) in [0, 1] → edges (B, N, H, W) in [0, 1]``
(N scales). The paper uses BDCN, a learned detector that would need a weight download; offline,
advkit's default is multi-scale Sobel gradient magnitude (soft maps, like BDCN's side outputs;
computed in torch on the images' device, equal to scikit-image's), and the ablation's Canny edges
(scikit-image, on the CPU) dilated to a width of 3–9 pixels are available too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

# scikit-image and scipy.ndimage are imported where the CPU detectors run: importing them costs
# every command that loads the attack registry ~0.4 s.


class EdgeModel(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _grey(images: torch.Tensor) -> np.ndarray:
    """(B, H, W) float64 luminance of [0, 1] RGB images."""
    from skimage import color

    arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    return np.stack([color.rgb2gray(a) for a in arr])


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis extended by ``radius`` on both sides with scipy's "reflect" rule
    (d c b a | a b c d | d c b a, the edge sample repeated), valid for any radius."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _correlate1d(x: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """scipy.ndimage.correlate1d(x, weights, axis=dim, mode="reflect") for (B, H, W) float64 tensors."""
    r = (len(weights) - 1) // 2
    padded = x.index_select(dim, _symmetric_index(x.shape[dim], r, x.device))
    n = x.shape[dim]
    return sum(w * padded.narrow(dim, k, n) for k, w in enumerate(weights.tolist()))


def _gaussian_weights(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


class SobelEdges:
    """Sobel gradient magnitude after Gaussian smoothing at several scales, each map scaled to [0, 1].

    Computed in torch on the images' device (float64), equal to scikit-image's
    ``filters.sobel(filters.gaussian(rgb2gray(x), sigma, mode="reflect"))`` per map (tested to 1e-6),
    so the attack never leaves the GPU for its edges.

    Args:
        sigmas: Gaussian scales (pixels), one output map each.
    """

    def __init__(self, sigmas: Sequence[float] = (0.5, 1.0, 2.0)) -> None:
        self.sigmas = tuple(float(s) for s in sigmas)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to(torch.float64)
        coeffs = torch.tensor([0.2125, 0.7154, 0.0721], dtype=torch.float64, device=x.device)
        grey = torch.einsum("bchw,c->bhw", x, coeffs)  # skimage's rgb2gray
        smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4
        derivative = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
        maps = []
        for s in self.sigmas:
            gauss, g = _gaussian_weights(s), grey
            for dim in (1, 2):
                g = _correlate1d(g, gauss, dim)
            gy = _correlate1d(_correlate1d(g, derivative, 1), smooth, 2)
            gx = _correlate1d(_correlate1d(g, smooth, 1), derivative, 2)
            mag = torch.sqrt((gx**2 + gy**2) / 2)
            peak = mag.flatten(1).amax(1).view(-1, 1, 1)
            maps.append(torch.where(peak > 0, mag / peak.clamp_min(1e-300), torch.zeros_like(mag)))
        return torch.stack(maps, 1).to(images.device, torch.float32)

    def config(self) -> dict:
        return {"name": "sobel", "sigmas": list(self.sigmas)}


class CannyEdges:
    """Canny edges (one scale) dilated to ``width`` pixels: the paper's ablation (CannyW 3–9)."""

    def __init__(self, sigma: float = 1.0, width: int = 3) -> None:
        if width < 1 or width % 2 == 0:
            raise ValueError(f"Canny dilation width must be a positive odd number, got {width}")
        self.sigma, self.width = float(sigma), int(width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from scipy import ndimage
        from skimage import feature

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

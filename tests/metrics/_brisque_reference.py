"""A plain NumPy/SciPy transcription of the BRISQUE MATLAB release, to check the torch port.

Written from the published algorithm (brisque_feature.m, estimateggdparam.m, estimateaggdparam.m
and MATLAB's imresize), one image at a time, with brute-force searches and explicit index maps, so
that it shares no code path with `advkit.metrics.brisque` beyond the model numbers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, special

ALPHAS = 0.2 + 0.001 * np.arange(9801)  # MATLAB 0.2:0.001:10


def fspecial_gaussian(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return h / h.sum()


def estimate_ggd(vec: np.ndarray) -> tuple[float, float]:
    r_gam = special.gamma(1 / ALPHAS) * special.gamma(3 / ALPHAS) / special.gamma(2 / ALPHAS) ** 2
    sigma_sq = np.mean(vec**2)
    rho = sigma_sq / np.mean(np.abs(vec)) ** 2
    return float(ALPHAS[np.argmin(np.abs(rho - r_gam))]), float(math.sqrt(sigma_sq))


def estimate_aggd(vec: np.ndarray) -> tuple[float, float, float]:
    r_gam = special.gamma(2 / ALPHAS) ** 2 / (special.gamma(1 / ALPHAS) * special.gamma(3 / ALPHAS))
    left = math.sqrt(np.mean(vec[vec < 0] ** 2))
    right = math.sqrt(np.mean(vec[vec > 0] ** 2))
    g = left / right
    rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
    rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    return float(ALPHAS[np.argmin((r_gam - rhatnorm) ** 2)]), left, right


def one_scale(image: np.ndarray) -> list[float]:
    window = fspecial_gaussian()
    mu = ndimage.correlate(image, window, mode="constant", cval=0.0)
    sigma = np.sqrt(np.abs(ndimage.correlate(image * image, window, mode="constant", cval=0.0) - mu * mu))
    centred = image - mu
    # Exact arithmetic gives I − μ = 0 in flat or symmetric neighbourhoods; keep those exact zeros
    # (the sign of a rounding residue would otherwise decide which side of the AGGD they count on).
    centred[np.abs(centred) < 1e-9] = 0.0
    structdis = centred / (sigma + 1)
    alpha, overall = estimate_ggd(structdis.ravel())
    feat = [alpha, overall**2]
    for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        pair = (structdis * np.roll(structdis, shift, axis=(0, 1))).ravel()
        alpha, left, right = estimate_aggd(pair)
        const = math.sqrt(special.gamma(1 / alpha)) / math.sqrt(special.gamma(3 / alpha))
        mean = (right - left) * (special.gamma(2 / alpha) / special.gamma(1 / alpha)) * const
        feat += [alpha, mean, left**2, right**2]
    return feat


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def _contributions(in_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize's weights and (0-based) indices for one dimension, antialiased cubic."""
    kernel_width = 4 / scale
    out_length = math.ceil(in_length * scale)
    x = np.arange(1, out_length + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = scale * _cubic(scale * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(int) - 1, 2 * in_length)]
    return weights, indices


def imresize_half(image: np.ndarray) -> np.ndarray:
    weights, indices = _contributions(image.shape[0], 0.5)
    rows = np.einsum("ok,okw->ow", weights, image[indices])
    weights, indices = _contributions(image.shape[1], 0.5)
    return np.einsum("ok,hok->ho", weights, rows[:, indices])


def features(grey: np.ndarray) -> np.ndarray:
    """The 36 features of an HxW image of grey levels 0..255."""
    image = grey.astype(np.float64)
    return np.array(one_scale(image) + one_scale(imresize_half(image)))


def score(feats: np.ndarray, model: dict[str, np.ndarray]) -> float:
    low, high = model["feature_min"], model["feature_max"]
    scaled = -1 + 2 * (feats - low) / (high - low)
    sv = model["support_vectors"].astype(np.float64)
    kernel = np.exp(-float(model["gamma"]) * ((scaled[None, :] - sv) ** 2).sum(axis=1))
    return float(kernel @ model["dual_coef"] - float(model["rho"]))

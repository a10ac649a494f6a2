"""Structural similarity (SSIM), equal to scikit-image's with the SPEC settings.

The reference is ``skimage.metrics.structural_similarity(x, y, channel_axis=-1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` on one HWC image:

- local statistics are weighted by a Gaussian of σ = 1.5 truncated at 3.5 σ, so its radius is
  ``int(3.5 · 1.5 + 0.5) = 5`` and the window is 11 × 11 (Wang et al. 2004's window);
- variances and covariance are population ones (divided by N, not N − 1);
- C1 = (0.01 · data_range)², C2 = (0.03 · data_range)²;
- the SSIM map is averaged after cropping ``(11 − 1) // 2 = 5`` pixels from every border, per
  channel, and the channel means are averaged.

scikit-image filters the whole image with reflected borders and then crops; every pixel that
survives the crop has its whole 11 × 11 window inside the image, so the padding never reaches the
average. A "valid" convolution therefore gives the same numbers without padding at all.

Torch ops only: `ssim` is differentiable and can serve as a loss (e.g. ``1 - ssim(x, y)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkit.metrics._common import Reduction, check_pair, check_reduction, reduce

SIGMA = 1.5
TRUNCATE = 3.5
K1 = 0.01
K2 = 0.03


def window_size(sigma: float = SIGMA, truncate: float = TRUNCATE) -> int:
    """Side of the Gaussian window as scipy.ndimage sizes it: ``2 · int(truncate · σ + 0.5) + 1``."""
    return 2 * int(truncate * sigma + 0.5) + 1


def _gaussian_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = window_size(sigma) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def _filter_valid(stack: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel of (N, K, H, W), keeping only full windows."""
    channels = stack.shape[1]
    size = kernel.numel()
    rows = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
    cols = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
    return F.conv2d(F.conv2d(stack, rows, groups=channels), cols, groups=channels)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """The cropped SSIM map, (B, C, H − 10, W − 10), of two checked images (no input checks)."""
    size = window_size()
    if x.shape[-2] < size or x.shape[-1] < size:
        raise ValueError(
            f"ssim: images must be at least {size}×{size} (the Gaussian window), got {tuple(x.shape)}"
        )
    kernel = _gaussian_1d(SIGMA, x.dtype, x.device)
    channels = x.shape[1]
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = moments.split(channels, dim=1)
    var_x = mu_xx - mu_x * mu_x
    var_y = mu_yy - mu_y * mu_y
    cov_xy = mu_xy - mu_x * mu_y
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: Reduction = "none"
) -> torch.Tensor:
    """Mean SSIM of each image pair, as scikit-image computes it (see the module docstring).

    Args:
        x, y: (B, C, H, W) float images in [0, data_range], H, W ≥ 11; same shape, dtype, device.
            Each channel is compared separately and the channel means are averaged.
        data_range: the span of possible pixel values (1.0 for [0, 1] images).
        reduction: ``'none'`` → (B,) values; ``'mean'`` → their mean.

    Returns:
        (B,) SSIM per image in [-1, 1] (1 for identical images), in the input's dtype.
        Differentiable with respect to both images.
    """
    check_reduction(reduction)
    check_pair(x, y, data_range, "ssim")
    values = ssim_map(x, y, data_range).flatten(1).mean(dim=1)
    return reduce(values, reduction)


class SSIM(nn.Module):
    """`ssim` as a module: ``SSIM(data_range=1.0, reduction='none')(x, y)``."""

    def __init__(self, data_range: float = 1.0, reduction: Reduction = "none") -> None:
        super().__init__()
        check_reduction(reduction)
        self.data_range = data_range
        self.reduction = reduction

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim(x, y, data_range=self.data_range, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}, reduction={self.reduction!r}, window={window_size()}"


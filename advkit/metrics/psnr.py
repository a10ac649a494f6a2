"""Peak signal-to-noise ratio, per image."""

from __future__ import annotations

import torch
from torch import nn

from advkit.metrics._common import Reduction, check_pair, check_reduction, reduce


def psnr(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: Reduction = "none"
) -> torch.Tensor:
    """PSNR in dB of each image pair: ``10 · log10(data_range² / MSE)``.

    The MSE is taken over all pixels and channels of one image, as
    ``skimage.metrics.peak_signal_noise_ratio`` does for a single image.

    Args:
        x, y: (B, C, H, W) float images in [0, data_range], same shape, dtype and device.
        data_range: the span of possible pixel values (1.0 for [0, 1] images).
        reduction: ``'none'`` → (B,) values; ``'mean'`` → their mean.

    Returns:
        (B,) PSNR per image (or its mean), in the input's dtype. Identical images give ``+inf``
        (the MSE is 0); a mean over a batch that holds one is ``+inf`` too.
    """
    check_reduction(reduction)
    check_pair(x, y, data_range, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    values = 10 * torch.log10(data_range**2 / mse)
    return reduce(values, reduction)


class PSNR(nn.Module):
    """`psnr` as a module: ``PSNR(data_range=1.0, reduction='none')(x, y)``."""

    def __init__(self, data_range: float = 1.0, reduction: Reduction = "none") -> None:
        super().__init__()
        check_reduction(reduction)
        self.data_range = data_range
        self.reduction = reduction

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return psnr(x, y, data_range=self.data_range, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}, reduction={self.reduction!r}"

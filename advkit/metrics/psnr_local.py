"""PSNR_L, the local PSNR of the Pasadena paper (Eq. 8): mean PSNR over sliding windows.

``PSNR_L(X, Y) = (1/S) Σ_i PSNR(W_i^X, W_i^Y)`` over all S windows of ``window × window`` pixels
at the given stride (the paper: 8 × 8, stride 1). A window's MSE is taken over its pixels and all
channels, so a window's PSNR is the PSNR of that RGB patch.

Windows whose two patches are identical have MSE 0 and an infinite PSNR, which would make the mean
infinite for any image with one unchanged patch. Their PSNR is capped at ``max_db`` (100 dB by
default) instead. 100 dB lies above every nonzero difference 8-bit images can show: one grey level
in one of the 192 values of an 8 × 8 RGB window is already 70.9 dB. So the cap changes nothing but
the exactly-equal windows, and ranks them above any changed window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advkit.metrics._common import Reduction, check_pair, check_reduction, reduce

DEFAULT_MAX_DB = 100.0


def psnr_local(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 8,
    stride: int = 1,
    data_range: float = 1.0,
    max_db: float = DEFAULT_MAX_DB,
    reduction: Reduction = "none",
) -> torch.Tensor:
    """Mean PSNR in dB over all ``window × window`` windows at ``stride``, per image.

    Args:
        x, y: (B, C, H, W) float images in [0, data_range], H, W ≥ window; same shape, dtype, device.
        window: side of the square window (the paper: 8).
        stride: step between windows in both directions (the paper: 1). Windows that would
            run past the bottom or right border are not used.
        data_range: the span of possible pixel values (1.0 for [0, 1] images).
        max_db: cap on a single window's PSNR, reached by windows whose patches are equal.
        reduction: ``'none'`` → (B,) values; ``'mean'`` → their mean.

    Returns:
        (B,) PSNR_L per image (or its mean), in the input's dtype; at most ``max_db``.
    """
    check_reduction(reduction)
    if window < 1 or stride < 1:
        raise ValueError(f"psnr_local: window and stride must be ≥ 1, got window={window}, stride={stride}")
    if not max_db > 0 or math.isinf(max_db):
        raise ValueError(f"psnr_local: max_db must be a positive finite number, got {max_db}")
    check_pair(x, y, data_range, "psnr_local")
    if x.shape[-2] < window or x.shape[-1] < window:
        raise ValueError(
            f"psnr_local: images must be at least {window}×{window} (the window), got {tuple(x.shape)}"
        )
    squared_error = (x - y).pow(2).mean(dim=1, keepdim=True)
    window_mse = F.avg_pool2d(squared_error, kernel_size=window, stride=stride)
    # Flooring the MSE where the PSNR would pass max_db caps it there and keeps gradients finite.
    floor = data_range**2 * 10 ** (-max_db / 10)
    window_psnr = 10 * torch.log10(data_range**2 / window_mse.clamp_min(floor))
    values = window_psnr.flatten(1).mean(dim=1)
    return reduce(values, reduction)


class PSNRLocal(nn.Module):
    """`psnr_local` as a module: ``PSNRLocal(window=8, stride=1)(x, y)``."""

    def __init__(
        self,
        window: int = 8,
        stride: int = 1,
        data_range: float = 1.0,
        max_db: float = DEFAULT_MAX_DB,
        reduction: Reduction = "none",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.window = window
        self.stride = stride
        self.data_range = data_range
        self.max_db = max_db
        self.reduction = reduction

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return psnr_local(
            x,
            y,
            window=self.window,
            stride=self.stride,
            data_range=self.data_range,
            max_db=self.max_db,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"window={self.window}, stride={self.stride}, data_range={self.data_range}, "
            f"max_db={self.max_db}, reduction={self.reduction!r}"
        )

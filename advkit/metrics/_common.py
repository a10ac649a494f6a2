"""Input checks and reductions shared by the image-quality metrics."""

from __future__ import annotations

from typing import Literal

import torch

from advkit.utils import check_value_range

Reduction = Literal["none", "mean"]


def check_images(x: torch.Tensor, name: str, data_range: float, what: str) -> None:
    """A float (B, C, H, W) tensor with values in [0, data_range]; else a `ValueError`."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what}: expected {name} of shape (B, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{what}: expected a float tensor for {name} with values in [0, {data_range:g}], got {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(f"{what}: {name} is empty, shape {tuple(x.shape)}")
    check_value_range(x, f"{what}: {name}", data_range, hint=" (0..255 images? divide by 255 or set data_range)")


def check_pair(x: torch.Tensor, y: torch.Tensor, data_range: float, what: str) -> None:
    """Two images of the same shape, dtype and device, each valid for `check_images`."""
    if not data_range > 0:
        raise ValueError(f"{what}: data_range must be positive, got {data_range}")
    check_images(x, "x", data_range, what)
    check_images(y, "y", data_range, what)
    if x.shape != y.shape:
        raise ValueError(
            f"{what}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != y.dtype:
        raise ValueError(f"{what}: x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"{what}: x and y must be on the same device, got {x.device} and {y.device}")


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """``'none'`` → the per-image values (B,); ``'mean'`` → their mean (a 0-d tensor)."""
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")

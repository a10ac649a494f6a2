"""BRISQUE, the no-reference image quality score of Mittal, Moorthy and Bovik (2012), offline.

The score follows the authors' MATLAB release (``brisquescore.m``, ``brisque_feature.m``) and uses
its LIVE-trained ε-SVR (``allmodel``, feature ranges ``allrange``), shipped with advkit as
``brisque_live.npz``; nothing is downloaded. See ``BRISQUE_MODEL.md`` for the model's provenance
and license. Lower is better; clean photographs score roughly 0–40, noisy or blurred ones more.
The SVR's output is not clipped, so values a little below 0 or above 100 occur.

Steps, per image, as the MATLAB release does them:

1. The image is read as 8-bit: RGB values are rounded to 0..255 and converted to grey with
   MATLAB ``rgb2gray``'s weights (0.2989, 0.5870, 0.1140), rounded to integers again.
2. At each of two scales (full, then half size): local mean μ and deviation σ from a 7 × 7
   Gaussian window of σ = 7/6 with zero padding outside the image (``filter2(..., 'same')``),
   ``σ = sqrt(|E[I²] − μ²|)``; MSCN coefficients ``(I − μ) / (σ + 1)``. Where I − μ is 0 in exact
   arithmetic (flat or symmetric neighbourhoods) it is kept at exactly 0 rather than a rounding
   residue whose sign would decide the next step's counts (see ``BRISQUE_MODEL.md``).
3. A generalized Gaussian fit to the MSCN coefficients gives (shape α, variance); for each of the
   horizontal, vertical, main- and anti-diagonal neighbour pairs (wrapping around the border as
   ``circshift`` does) an asymmetric generalized Gaussian fit to the products of neighbouring
   coefficients gives (shape α, mean η, left variance, right variance): 18 features per scale.
   Shapes are found by moment matching on the grid α = 0.2, 0.201, …, 10.
4. The half-size image is MATLAB's ``imresize(I, 0.5)``: bicubic (a = −0.5) with antialiasing,
   symmetric borders, ``ceil(H/2) × ceil(W/2)``, not rounded.
5. The 36 features are scaled to [−1, 1] with ``allrange`` and fed to the RBF ε-SVR (γ = 0.05).

Computed in float64 on the input's device; batched. Not differentiable (the 8-bit rounding and
the grid search have no useful gradient).

The model was trained on LIVE images of about 512 × 768 pixels. On 32 × 32 CIFAR-10 images the
statistics rest on 1024 and 256 samples, scores often exceed 100 and one grey level in one pixel
can move a score by a point or two: compare methods on averages over many images there.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advkit.metrics._common import Reduction, check_images, check_reduction, reduce

MODEL_FILE = "brisque_live.npz"
NUM_FEATURES = 36

# MATLAB rgb2gray: the first row of the inverse of the NTSC (YIQ → RGB) matrix.
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
_GAUSS_SIZE = 7
_GAUSS_SIGMA = 7 / 6
_MSCN_C = 1.0
_FLAT_TOLERANCE = 1e-9
# (rows, columns) shifts of the paired products, in the order of the features.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
# The grid of shape parameters searched by moment matching: 0.2:0.001:10 in MATLAB.
_ALPHA_STEPS = 9801
# A cubic resampling kernel scaled by 1/2 spans 8 input pixels; MATLAB takes ceil(8) + 2 taps.
_RESIZE_TAPS = 10
_RESIZE_LEFT = 4


@lru_cache(maxsize=1)
def _model_arrays() -> dict[str, np.ndarray]:
    with resources.files("advkit.metrics").joinpath(MODEL_FILE).open("rb") as f:
        with np.load(f, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}


def load_model(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The shipped SVR as float64 tensors: ``support_vectors`` (774, 36), ``dual_coef`` (774,),
    ``gamma``, ``rho`` (0-d) and ``feature_min``, ``feature_max`` (36,) for the [−1, 1] scaling."""
    return {
        k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in _model_arrays().items()
    }


def _alpha_grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The α grid and the moment ratios a GGD and an AGGD of each α have."""
    alpha = 0.2 + 0.001 * torch.arange(_ALPHA_STEPS, dtype=torch.float64, device=device)
    lg1, lg2, lg3 = torch.lgamma(1 / alpha), torch.lgamma(2 / alpha), torch.lgamma(3 / alpha)
    ratio_ggd = torch.exp(lg1 + lg3 - 2 * lg2)  # E[x²] / E[|x|]²
    ratio_aggd = torch.exp(2 * lg2 - lg1 - lg3)  # its reciprocal, as the AGGD estimator uses it
    return alpha, ratio_ggd, ratio_aggd


def _gaussian_window(device: torch.device) -> torch.Tensor:
    radius = _GAUSS_SIZE // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-(offsets**2) / (2 * _GAUSS_SIGMA**2))
    return weights / weights.sum()


def _filter_same_zero(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MATLAB ``filter2(w, I, 'same')`` for a separable symmetric w: zeros outside the image."""
    size = weights.numel()
    pad = size // 2
    out = F.conv2d(images, weights.view(1, 1, size, 1), padding=(pad, 0))
    return F.conv2d(out, weights.view(1, 1, 1, size), padding=(0, pad))


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = −0.5, as MATLAB ``imresize`` defines it."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = 1.5 * ax3 - 2.5 * ax2 + 1
    far = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, near, torch.where(ax <= 2, far, torch.zeros_like(ax)))


def _half_size_weights(device: torch.device) -> torch.Tensor:
    # Output pixel s (0-based) sits at input coordinate 2s + 0.5 and reads inputs 2s − 4 … 2s + 5;
    # the antialiased kernel is cubic(d / 2) / 2, normalized to sum 1 like MATLAB does.
    distance = 4.5 - torch.arange(_RESIZE_TAPS, dtype=torch.float64, device=device)
    weights = _cubic(distance / 2) / 2
    return weights / weights.sum()


def _mirror_index(length: int, count: int, device: torch.device) -> torch.Tensor:
    """Input index of each of ``count`` padded positions starting at −4, mirrored at the borders
    with the edge pixel repeated (MATLAB ``imresize``'s symmetric padding)."""
    index = torch.arange(-_RESIZE_LEFT, -_RESIZE_LEFT + count, device=device) % (2 * length)
    return torch.where(index < length, index, 2 * length - 1 - index)


def _imresize_half(images: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(I, 0.5)`` (bicubic, antialiased) of (N, 1, H, W) float64 images."""
    weights = _half_size_weights(images.device)
    height, width = images.shape[-2:]
    out_h, out_w = math.ceil(height / 2), math.ceil(width / 2)
    rows = _mirror_index(height, 2 * (out_h - 1) + _RESIZE_TAPS, images.device)
    cols = _mirror_index(width, 2 * (out_w - 1) + _RESIZE_TAPS, images.device)
    out = F.conv2d(images[:, :, rows, :], weights.view(1, 1, -1, 1), stride=(2, 1))
    return F.conv2d(out[:, :, :, cols], weights.view(1, 1, 1, -1), stride=(1, 2))


def _grey_8bit(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] → (B, 1, H, W) float64 grey levels 0..255 (integers)."""
    levels = _round_half_up(images.detach().to(torch.float64).clamp(0, 1) * 255)
    if levels.shape[1] == 1:
        return levels
    weights = torch.tensor(_RGB2GRAY, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
    return _round_half_up((levels * weights).sum(dim=1, keepdim=True))


def _round_half_up(values: torch.Tensor) -> torch.Tensor:
    # MATLAB's uint8() rounds halves away from zero; torch.round would round them to even.
    return torch.floor(values + 0.5)


def _nearest_alpha(ratio: torch.Tensor, table: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The grid α whose moment ratio is closest to each measured ratio, the first one on ties
    (MATLAB's ``min``). ``table`` must be strictly increasing along the grid.

    The table is monotonic, so the nearest entry is one of the two around the insertion point:
    a binary search instead of comparing every ratio with all 9801 entries.
    """
    upper = torch.searchsorted(table, ratio.contiguous()).clamp(1, table.numel() - 1)
    lower = upper - 1
    take_lower = (ratio - table[lower]).abs() <= (table[upper] - ratio).abs()
    index = torch.where(take_lower, lower, upper)
    return torch.where(torch.isnan(ratio), torch.full_like(ratio, float("nan")), alpha[index])


def _scale_features(images: torch.Tensor, grid: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The 18 features of one scale: (N, 1, H, W) grey levels → (N, 18)."""
    alpha, ratio_ggd, ratio_aggd = grid
    window = _gaussian_window(images.device)
    mu = _filter_same_zero(images, window)
    sigma = (_filter_same_zero(images * images, window) - mu * mu).abs().sqrt()
    centred = images - mu
    # Inside a flat patch I − μ is 0 in exact arithmetic but a rounding residue of either sign
    # here, and the signs of such residues would decide the AGGD's left/right counts. Real
    # deviations of integer grey levels from the window mean are ≥ ~1e-4, so zero the residues.
    centred = torch.where(centred.abs() < _FLAT_TOLERANCE, torch.zeros_like(centred), centred)
    mscn = (centred / (sigma + _MSCN_C)).flatten(1)

    # Generalized Gaussian: the shape from E[x²] / E[|x|]², the variance E[x²].
    second = (mscn * mscn).mean(dim=1)
    first_abs = mscn.abs().mean(dim=1)
    # E[x²]/E[|x|]² falls as α grows; negate both sides to search an increasing table.
    features = [_nearest_alpha(-(second / first_abs.pow(2)), -ratio_ggd, alpha), second]

    mscn_map = mscn.view_as(images)
    for shift in _SHIFTS:
        pair = (mscn_map * torch.roll(mscn_map, shifts=shift, dims=(-2, -1))).flatten(1)
        squared = pair * pair
        negative, positive = pair < 0, pair > 0
        zero = squared.new_zeros(())
        left_std = torch.where(negative, squared, zero).sum(dim=1).div(negative.sum(dim=1)).sqrt()
        right_std = torch.where(positive, squared, zero).sum(dim=1).div(positive.sum(dim=1)).sqrt()
        gamma_hat = left_std / right_std
        r_hat = pair.abs().mean(dim=1).pow(2) / squared.mean(dim=1)
        r_hat_norm = r_hat * (gamma_hat.pow(3) + 1) * (gamma_hat + 1) / (gamma_hat.pow(2) + 1).pow(2)
        shape = _nearest_alpha(r_hat_norm, ratio_aggd, alpha)
        lg1, lg2, lg3 = torch.lgamma(1 / shape), torch.lgamma(2 / shape), torch.lgamma(3 / shape)
        mean = (right_std - left_std) * torch.exp(lg2 - lg1 + 0.5 * (lg1 - lg3))
        features += [shape, mean, left_std.pow(2), right_std.pow(2)]
    return torch.stack(features, dim=1)


def brisque_features(x: torch.Tensor) -> torch.Tensor:
    """The 36 BRISQUE features of each image, unscaled, in the MATLAB release's order.

    Args:
        x: (B, 1, H, W) or (B, 3, H, W) float images in [0, 1] (RGB), H, W ≥ 2.

    Returns:
        (B, 36) float64: per scale (full, half), the MSCN GGD (shape, variance) and, for the
        horizontal, vertical, main- and anti-diagonal products, the AGGD (shape, mean, left
        variance, right variance).
    """
    _check_brisque_input(x)
    grid = _alpha_grid(x.device)
    grey = _grey_8bit(x)
    full = _scale_features(grey, grid)
    half = _scale_features(_imresize_half(grey), grid)
    return torch.cat([full, half], dim=1)


def brisque_from_features(features: torch.Tensor) -> torch.Tensor:
    """The SVR score of (B, 36) unscaled BRISQUE features → (B,) float64."""
    if features.ndim != 2 or features.shape[1] != NUM_FEATURES:
        raise ValueError(
            f"brisque: expected features of shape (B, {NUM_FEATURES}), got {tuple(features.shape)}"
        )
    model = load_model(features.device)
    low, high = model["feature_min"], model["feature_max"]
    scaled = -1 + 2 * (features.to(torch.float64) - low) / (high - low)
    # The direct (not matrix-product) distance keeps full float64 accuracy; 774 × 36 is small.
    distance = torch.cdist(
        scaled, model["support_vectors"], compute_mode="donot_use_mm_for_euclid_dist"
    ).pow(2)
    return torch.exp(-model["gamma"] * distance) @ model["dual_coef"] - model["rho"]


def _check_brisque_input(x: torch.Tensor) -> None:
    check_images(x, "x", 1.0, "brisque")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"brisque: expected 1 (grey) or 3 (RGB) channels, got shape {tuple(x.shape)}")
    if x.shape[-2] < 2 or x.shape[-1] < 2:
        raise ValueError(f"brisque: images must be at least 2×2, got {tuple(x.shape)}")


def brisque(x: torch.Tensor, reduction: Reduction = "none") -> torch.Tensor:
    """BRISQUE score of each image (lower is better), offline, as the authors' MATLAB release.

    Args:
        x: (B, 1, H, W) or (B, 3, H, W) float images in [0, 1] (RGB). They are scored as 8-bit
            images (values rounded to 0..255), like the image files the reference code reads.
        reduction: ``'none'`` → (B,) values; ``'mean'`` → their mean.

    Returns:
        (B,) scores in the input's dtype, roughly in [0, 100] but not clipped. An image without
        contrast (a flat one) has no defined score: NaN, with a `RuntimeWarning`.
    """
    check_reduction(reduction)
    scores = brisque_from_features(brisque_features(x))
    bad = torch.nonzero(~torch.isfinite(scores)).flatten().tolist()
    if bad:
        warnings.warn(
            f"brisque: undefined (NaN) for image(s) {bad[:10]}{' …' if len(bad) > 10 else ''}: "
            "BRISQUE needs an image with some contrast",
            RuntimeWarning,
            stacklevel=2,
        )
    return reduce(scores.to(x.dtype), reduction)


class BRISQUE(nn.Module):
    """`brisque` as a module: ``BRISQUE(reduction='none')(x)``."""

    def __init__(self, reduction: Reduction = "none") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return brisque(x, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

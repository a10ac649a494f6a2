"""Pieces shared by the transfer attacks: diverse inputs (DIM) and translation-invariant smoothing (TI).

- `diverse_input` (Xie et al., 2019): with probability ``prob``, resize the whole batch to a random
  size and zero-pad it at a random offset to a fixed size. ``resize_rate < 1`` (the default, 0.9,
  torchattacks' ``DIFGSM`` semantics) shrinks an H×W batch to a width drawn from [⌊0.9·W⌋, W) (the
  height in proportion) and pads it back to H×W. ``resize_rate > 1`` is the paper's direction:
  enlarge to a width in [W, ⌊rate·W⌋), pad to ⌊rate·H⌋ × ⌊rate·W⌋, then (unlike the paper and
  torchattacks, which feed the larger image) resize bilinearly back to H×W, so classifiers with a
  fixed input size work. Resizing is bilinear (align_corners=False, no antialiasing); the top and
  left offsets are drawn from [0, margin) as in the paper's code, so the bottom and right pads are
  never empty.
- `gaussian_kernel2d` and `smooth_gradient` (Dong et al., 2019): the gradient convolved channel by
  channel with a normalized K×K Gaussian (zero padding, output the input's size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel2d(
    size: int = 15,
    sigma: float = 3.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A (size, size) Gaussian with standard deviation ``sigma`` pixels, normalized to sum 1.

    Dong et al.'s code (and torchattacks' ``TIFGSM``) parametrize the same kernel by ``nsig``, the
    kernel's half-width in standard deviations: their ``nsig`` equals ``sigma = (size − 1) / (2·nsig)``
    here (their default ``nsig = 3`` with ``size = 15`` is ``sigma = 7/3``).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1, got {size}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g1 = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g1, g1)
    return (k / k.sum()).to(dtype=dtype, device=device)


def smooth_gradient(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``grad`` (B, C, H, W) convolved per channel with ``kernel`` (K, K), zero padding, same size."""
    if grad.ndim != 4:
        raise ValueError(f"grad must be (B, C, H, W), got shape {tuple(grad.shape)}")
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be (K, K) with K odd, got shape {tuple(kernel.shape)}")
    c = grad.shape[1]
    k = kernel.shape[0]
    weight = kernel.to(grad.dtype).to(grad.device).expand(c, 1, k, k)
    return F.conv2d(grad, weight, padding=k // 2, groups=c)


class GradientSmoothing(nn.Module):
    """`smooth_gradient` with a fixed Gaussian kernel (TI): ``forward(grad)`` → smoothed, same shape."""

    def __init__(self, size: int = 15, sigma: float = 3.0) -> None:
        super().__init__()
        self.size, self.sigma = size, sigma
        self.register_buffer("kernel", gaussian_kernel2d(size, sigma), persistent=False)

    def forward(self, grad: torch.Tensor) -> torch.Tensor:
        if self.kernel.device != grad.device:
            # attacks are rarely moved with .to(); keep one copy on the gradients' device
            self.kernel = self.kernel.to(grad.device)
        return smooth_gradient(grad, self.kernel)

    def config(self) -> dict[str, object]:
        return {"kernel": "gaussian", "kernel_size": self.size, "sigma": self.sigma, "padding": "zeros"}


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    # One draw per call whatever the range (an empty range yields ``low``), so the stream of draws,
    # and thus every later step, does not depend on the image size.
    return int(torch.randint(low, max(high, low + 1), (1,), dtype=torch.int32, generator=generator))


def diverse_input(
    images: torch.Tensor,
    resize_rate: float = 0.9,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The DIM input transform of one batch (one random size and offset shared by the batch).

    Args:
        images: (B, C, H, W) float.
        resize_rate: < 1 shrinks to [⌊rate·W⌋, W) and pads back to H×W; > 1 enlarges to
            [W, ⌊rate·W⌋), pads to ⌊rate·H⌋×⌊rate·W⌋ and resizes back to H×W; 1 is the identity.
        prob: probability that the transformed batch is returned (else ``images`` itself).
        generator: a CPU generator for the draws (None: torch's global one).

    Returns (B, C, H, W), differentiable w.r.t. ``images``. The draws per call are, in order: the
    new width, the top offset, the left offset, then a uniform number compared with ``prob`` — always
    all four, as in the paper's code and torchattacks (so with the same generator state it picks the
    same transform as torchattacks' ``DIFGSM.input_diversity`` for square images and rate < 1).
    Non-square images keep their aspect ratio (new height = round(H · new width / W)).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if not resize_rate > 0:
        raise ValueError(f"resize_rate must be > 0, got {resize_rate}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    h, w = images.shape[-2:]
    if resize_rate < 1:
        low, high = max(1, int(w * resize_rate)), w
        out_h, out_w = h, w
    else:
        low, high = w, max(w, int(w * resize_rate))
        out_h, out_w = max(h, int(h * resize_rate)), high
    new_w = _randint(low, high, generator)
    new_h = new_w if h == w else min(out_h, max(1, round(h * new_w / w)))
    top = _randint(0, out_h - new_h, generator)
    left = _randint(0, out_w - new_w, generator)
    apply = bool(torch.rand(1, generator=generator) < prob)
    if not apply or (new_h, new_w) == (h, w) == (out_h, out_w):
        return images
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False)
    padded = F.pad(resized, (left, out_w - new_w - left, top, out_h - new_h - top), value=0.0)
    if (out_h, out_w) != (h, w):
        padded = F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)
    return padded


class DiverseInput(nn.Module):
    """`diverse_input` with its own generator seeded by ``seed`` (advances with every call)."""

    def __init__(self, resize_rate: float = 0.9, prob: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if not resize_rate > 0:
            raise ValueError(f"resize_rate must be > 0, got {resize_rate}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.resize_rate, self.prob, self.seed = resize_rate, prob, seed
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return diverse_input(images, self.resize_rate, self.prob, self.generator)

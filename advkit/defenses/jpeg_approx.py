"""A differentiable approximation of baseline JPEG, the gradient an adaptive attack uses for JPEG.

BPDA (Athalye et al., 2018) attacks a non-differentiable defense f with the gradient of a
differentiable g ≈ f. For JPEG the identity is a poor g: on CIFAR-10 it leaves JPEG at quality 75
with several times the accuracy that PGD through this approximation leaves (docs/results.md).
`differentiable_jpeg` follows the codec step by step, in torch:

1. RGB to YCbCr (JFIF, full range);
2. 2×2 average downsampling of Cb and Cr (4:2:0, the default of Pillow and libjpeg);
3. 8×8 block DCT-II, quantization with the IJG tables scaled to ``quality``, and rounding —
   replaced by the cubic soft rounding ``r + (x − r)³`` (Shin and Song, 2017), whose value is
   near ``round(x)`` but whose gradient does not vanish;
4. inverse DCT, bilinear upsampling of the chroma (libjpeg's "fancy" upsampling is this
   triangle filter) and YCbCr to RGB.

It leaves out the 8-bit rounding of the input and output and libjpeg's integer DCT, so it is an
approximation: on CIFAR-10 test images its output is within 1.2/255 of Pillow's JPEG on average
(the identity: 5.0/255; tests/defenses/test_classical.py). Images whose sides are not multiples of
16 are padded by edge replication, as libjpeg pads, and cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The IJG (JPEG Annex K) base quantization tables, row-major by frequency.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)


def quantization_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The (8, 8) table libjpeg uses at ``quality`` in 1..100 (its ``jpeg_quality_scaling``)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA_TABLE if chroma else _LUMA_TABLE, dtype=torch.float64)
    return ((base * scale + 50) // 100).clamp(1, 255)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (coefficients = D @ block @ Dᵀ)."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def soft_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x) + (x − round(x))³``: within 0.125 of ``round(x)``, gradient 3·(x − round(x))²."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _code_blocks(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantize (soft), dequantize and invert every 8×8 block of ``plane`` (B, H, W), H, W % 8 == 0."""
    b, h, w = plane.shape
    d = _dct_matrix().to(plane)
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)
    q = table.to(plane)
    coefficients = soft_round((d @ blocks @ d.T) / q) * q
    return (d.T @ coefficients @ d).transpose(2, 3).reshape(b, h, w)


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


def differentiable_jpeg(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG compression and decompression at ``quality``, approximated differentiably.

    Args:
        images: (B, 3, H, W) RGB float in [0, 1].
        quality: 1..100, as in Pillow's ``save(quality=...)``.

    Returns:
        (B, 3, H, W) float in [0, 1], in the input's dtype (computed in at least float32).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"differentiable_jpeg: expected images (B, 3, H, W), got {tuple(images.shape)}")
    dtype = images.dtype
    h, w = images.shape[-2:]
    x = _pad_to(images.to(torch.promote_types(dtype, torch.float32)) * 255, 16)
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    y = _code_blocks(y - 128, quantization_table(quality)) + 128
    size = y.shape[-2:]

    def code_chroma(plane: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(plane[:, None], 2)
        sh, sw = small.shape[-2:]
        coded = _code_blocks(_pad_to(small, 8)[:, 0], quantization_table(quality, chroma=True))[:, :sh, :sw]
        return F.interpolate(coded[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    cb, cr = code_chroma(cb), code_chroma(cr)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return (rgb[..., :h, :w] / 255).clamp(0, 1).to(dtype)


__all__ = ["differentiable_jpeg", "quantization_table", "soft_round"]

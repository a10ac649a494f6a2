"""The kernel filter and its two gradients in plain torch (CPU, and any device without Triton).

Shift-accumulate: for each of the K² offsets (i, j) one fused multiply-add of the shifted padded
image with the (B, G, H, W) strided view of the kernels that belongs to that offset. Scratch is a
few image-sized tensors (the padded image, a float32 accumulator for half types); nothing of the
size B·C·K²·H·W is allocated beyond the kernels and their gradient, and kernels of any layout are
read in place. Each call is 1–3 large elementwise ops per tap, few enough that a second thread
helps even on a busy machine (many small ops stall when a core is taken by another process).

Half and bfloat16 inputs are computed in float32, one tap at a time; results are stored in the
input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "reflect", "replicate")
MAX_KERNEL_SIZE = 15

_TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}

def kernel_geometry(channels: int, kernel_channels: int) -> tuple[int, int] | None:
    """(K, G) such that ``kernel_channels == G·K²`` with G = ``channels`` or 1, K odd in 1..15.

    G = C is preferred where both readings fit (only possible when C is itself an odd square, e.g.
    C = 9 with 9 kernel channels reads as K = 1 per channel, not a shared 3×3). None if neither fits.
    """
    # Comparisons only (no isqrt), so symbolic sizes under torch.compile(dynamic=True) work.
    for groups in (channels, 1):
        for size in range(1, MAX_KERNEL_SIZE + 1, 2):
            if groups * size * size == kernel_channels:
                return size, groups
    return None


def geometry_or_raise(channels: int, kernel_channels: int) -> tuple[int, int]:
    geometry = kernel_geometry(channels, kernel_channels)
    if geometry is None:
        raise ValueError(
            f"kernels with {kernel_channels} channels do not fit images with {channels} channels: "
            f"expected C·K² or K² channels for an odd K in 1..{MAX_KERNEL_SIZE}"
        )
    return geometry


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 accumulation for half types; float32 and float64 keep their own precision."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def pad(images: torch.Tensor, radius: int, padding: str) -> torch.Tensor:
    """Contiguous copy of ``images`` padded by ``radius`` on both sides of H and W."""
    if radius == 0:
        return images.contiguous()
    return F.pad(images, (radius,) * 4, mode=_TORCH_PAD_MODE[padding]).contiguous()


def fold_padding(grad_padded: torch.Tensor, radius: int, padding: str) -> torch.Tensor:
    """Adjoint of `pad`: a gradient over the padded image → the gradient over the image.

    Every padded pixel is a copy of one image pixel (or a zero), so its gradient is added back to
    the pixel it copies. Rows first (border columns included), then columns, so corners land right.
    """
    if radius == 0:
        return grad_padded
    if padding == "zeros":
        return grad_padded[..., radius:-radius, radius:-radius]
    folded = grad_padded
    for dim in (-2, -1):
        size = folded.shape[dim] - 2 * radius
        inner = folded.narrow(dim, radius, size).clone()
        before = folded.narrow(dim, 0, radius)
        after = folded.narrow(dim, radius + size, radius)
        if padding == "reflect":
            # Padded index -t copies t, and size-1+t copies size-1-t (t = 1..radius).
            inner.narrow(dim, 1, radius).add_(before.flip(dim))
            inner.narrow(dim, size - 1 - radius, radius).add_(after.flip(dim))
        else:  # replicate: the whole border copies the edge pixel
            inner.narrow(dim, 0, 1).add_(before.sum(dim, keepdim=True))
            inner.narrow(dim, size - 1, 1).add_(after.sum(dim, keepdim=True))
        folded = inner
    return folded


def _tap(kernels: torch.Tensor, size: int, i: int, j: int) -> torch.Tensor:
    """The (B, G, H, W) view of tap (i, j): channels g·K² + i·K + j for every group g; no copy."""
    return kernels[:, i * size + j :: size * size]


def forward(images: torch.Tensor, kernels: torch.Tensor, padding: str) -> torch.Tensor:
    channels, height, width = images.shape[1:]
    size, _ = geometry_or_raise(channels, kernels.shape[1])
    dtype = compute_dtype(images.dtype)
    padded = pad(images.to(dtype), size // 2, padding)
    out = torch.empty_like(images)
    acc = out if out.dtype == dtype else torch.empty(out.shape, dtype=dtype, device=out.device)
    for i in range(size):
        for j in range(size):
            shifted = padded[:, :, i : i + height, j : j + width]
            tap = _tap(kernels, size, i, j).to(dtype)  # broadcasts over the channels when G = 1
            if i == 0 and j == 0:
                torch.mul(shifted, tap, out=acc)
            else:
                acc.addcmul_(shifted, tap)
    if acc is not out:
        out.copy_(acc)
    return out


def grad_images(grad_out: torch.Tensor, kernels: torch.Tensor, padding: str) -> torch.Tensor:
    """Adjoint of the filter in its image argument: scatter grad_out·kernel to the pixels read."""
    batch, channels, height, width = grad_out.shape
    size, _ = geometry_or_raise(channels, kernels.shape[1])
    radius = size // 2
    dtype = compute_dtype(grad_out.dtype)
    grad = grad_out.to(dtype)
    grad_padded = grad.new_zeros((batch, channels, height + 2 * radius, width + 2 * radius))
    for i in range(size):
        for j in range(size):
            window = grad_padded[:, :, i : i + height, j : j + width]
            window.addcmul_(grad, _tap(kernels, size, i, j).to(dtype))
    return torch.empty_like(grad_out).copy_(fold_padding(grad_padded, radius, padding))


def grad_kernels(
    grad_out: torch.Tensor, images: torch.Tensor, padding: str, kernel_channels: int
) -> torch.Tensor:
    """Gradient in the kernels: grad_out times the shifted image, summed over a group's channels.

    Returned contiguous (B, G·K², H, W) in the images' dtype.
    """
    batch, channels, height, width = images.shape
    size, groups = geometry_or_raise(channels, kernel_channels)
    dtype = compute_dtype(images.dtype)
    grad = grad_out.to(dtype)
    padded = pad(images.to(dtype), size // 2, padding)
    result = images.new_empty((batch, kernel_channels, height, width))
    direct = result.dtype == dtype
    for i in range(size):
        for j in range(size):
            shifted = padded[:, :, i : i + height, j : j + width]
            target = _tap(result, size, i, j)
            value = torch.mul(grad[:, :groups], shifted[:, :groups], out=target if direct else None)
            # G = 1: the other channels add into the shared tap. (torch.sum(..., out=target)
            # into this strided view ran erratically, up to 30× slower.)
            for c in range(groups, channels):
                value.addcmul_(grad[:, c : c + 1], shifted[:, c : c + 1])
            if not direct:
                target.copy_(value)
    return result

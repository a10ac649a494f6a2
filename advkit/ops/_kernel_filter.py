"""Per-pixel kernel filtering: ``kernel_filter``, its unfold reference, and the ``KernelFilter`` module.

One op, ``advkit::kernel_filter``, registered with `torch.library.custom_op` together with its two
backward ops (``advkit::kernel_filter_grad_images`` and ``advkit::kernel_filter_grad_kernels``).
The op is bilinear, so the gradient of each of the three is again one of the three: every order of
derivative is available, and all of them are opaque single nodes under `torch.compile`.

On CUDA the three run as Triton kernels (imported on the first CUDA call only); everywhere else,
and for float64 on CUDA, they run the shift-accumulate torch path of `advkit.ops._torch_path`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit.ops import _torch_path
from advkit.ops._torch_path import MAX_KERNEL_SIZE, PADDING_MODES, kernel_geometry

__all__ = ["KernelFilter", "kernel_filter", "kernel_filter_reference"]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _channel_error(images: Tensor, kernels: Tensor) -> str:
    """Why ``kernels`` has the wrong channel count for ``images``, naming both shapes."""
    channels, kernel_channels = int(images.shape[1]), int(kernels.shape[1])
    shapes = f"images {_shape(images)}, kernels {_shape(kernels)}"
    for groups, what in ((channels, "C·K²"), (1, "K²")):
        if groups <= 0 or kernel_channels % groups:
            continue
        size = math.isqrt(kernel_channels // groups)
        if size * size != kernel_channels // groups:
            continue
        if size % 2 == 0:
            return f"kernel size must be odd: {kernel_channels} kernel channels read as {what} with K = {size} ({shapes})"
        if size > MAX_KERNEL_SIZE:
            return f"kernel size must be at most {MAX_KERNEL_SIZE}: {kernel_channels} kernel channels read as {what} with K = {size} ({shapes})"
    return (
        f"kernels must have C·K² = {channels}·K² channels (a kernel per channel) or K² channels "
        f"(one kernel shared by the channels) for an odd K in 1..{MAX_KERNEL_SIZE}; got {kernel_channels} ({shapes})"
    )


def _check_padding(padding: str) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {', '.join(PADDING_MODES)}; got {padding!r}")


def _check_inputs(images: Tensor, kernels: Tensor, padding: str) -> tuple[int, int]:
    """Validate the arguments of `kernel_filter`; return (K, G)."""
    if not isinstance(images, Tensor) or not isinstance(kernels, Tensor):
        raise TypeError(
            f"images and kernels must be tensors, got {type(images).__name__} and {type(kernels).__name__}"
        )
    _check_padding(padding)
    if images.dim() != 4 or kernels.dim() != 4:
        raise ValueError(
            f"images must be (B, C, H, W) and kernels (B, G·K·K, H, W); got images {_shape(images)}, kernels {_shape(kernels)}"
        )
    batch, channels, height, width = images.shape
    if kernels.shape[0] != batch or kernels.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"kernels must share batch size and H×W with images: images {_shape(images)}, kernels {_shape(kernels)}"
        )
    geometry = kernel_geometry(channels, kernels.shape[1])
    if geometry is None:
        raise ValueError(_channel_error(images, kernels))
    if not images.is_floating_point() or images.dtype != kernels.dtype:
        raise ValueError(
            f"images and kernels must share one floating dtype: images {_shape(images)} {images.dtype}, "
            f"kernels {_shape(kernels)} {kernels.dtype}"
        )
    if images.device != kernels.device:
        raise ValueError(
            f"images and kernels must be on one device: images {_shape(images)} on {images.device}, "
            f"kernels {_shape(kernels)} on {kernels.device}"
        )
    radius = geometry[0] // 2
    if padding == "reflect" and radius >= min(height, width):
        raise ValueError(
            f"reflect padding needs H and W larger than K // 2 = {radius}: images {_shape(images)}, "
            f"kernels {_shape(kernels)}; use padding='replicate' or 'zeros' for images this small"
        )
    return geometry


def kernel_filter_reference(images: Tensor, kernels: Tensor, padding: str = "zeros") -> Tensor:
    """The unfold formula that defines `kernel_filter`: simple, differentiable and memory-hungry.

    It materializes the (B, C·K², H·W) unfolded image; use it to test and benchmark, not to train.
    """
    size, groups = _check_inputs(images, kernels, padding)
    batch, channels, height, width = images.shape
    radius = size // 2
    if padding == "zeros":
        columns = F.unfold(images, size, padding=radius)
    else:
        padded = F.pad(images, (radius,) * 4, mode=_torch_path._TORCH_PAD_MODE[padding])
        columns = F.unfold(padded, size)
    columns = columns.view(batch, channels, size * size, height, width)
    taps = kernels.reshape(batch, groups, size * size, height, width)
    return (columns * taps).sum(dim=2)


@torch.library.custom_op("advkit::kernel_filter", mutates_args=())
def _kernel_filter_op(images: Tensor, kernels: Tensor, padding: str) -> Tensor:
    return _torch_path.forward(images, kernels, padding)


@torch.library.custom_op("advkit::kernel_filter_grad_images", mutates_args=())
def _grad_images_op(grad_out: Tensor, kernels: Tensor, padding: str) -> Tensor:
    return _torch_path.grad_images(grad_out, kernels, padding)


@torch.library.custom_op("advkit::kernel_filter_grad_kernels", mutates_args=())
def _grad_kernels_op(grad_out: Tensor, images: Tensor, padding: str, kernel_channels: int) -> Tensor:
    return _torch_path.grad_kernels(grad_out, images, padding, kernel_channels)


def _use_triton(t: Tensor) -> bool:
    # float64 stays on the exact torch path; Triton accumulates in float32.
    return t.dtype != torch.float64


@_kernel_filter_op.register_kernel("cuda")
def _(images: Tensor, kernels: Tensor, padding: str) -> Tensor:
    if not _use_triton(images):
        return _torch_path.forward(images, kernels, padding)
    from advkit.ops import _triton_path

    return _triton_path.forward(images, kernels, padding)


@_grad_images_op.register_kernel("cuda")
def _(grad_out: Tensor, kernels: Tensor, padding: str) -> Tensor:
    if not _use_triton(grad_out):
        return _torch_path.grad_images(grad_out, kernels, padding)
    from advkit.ops import _triton_path

    return _triton_path.grad_images(grad_out, kernels, padding)


@_grad_kernels_op.register_kernel("cuda")
def _(grad_out: Tensor, images: Tensor, padding: str, kernel_channels: int) -> Tensor:
    if not _use_triton(images):
        return _torch_path.grad_kernels(grad_out, images, padding, kernel_channels)
    from advkit.ops import _triton_path

    return _triton_path.grad_kernels(grad_out, images, padding, kernel_channels)


# Fake kernels: the real ones allocate exactly like this (see the torch and Triton paths).
@_kernel_filter_op.register_fake
def _(images: Tensor, kernels: Tensor, padding: str) -> Tensor:
    return torch.empty_like(images)


@_grad_images_op.register_fake
def _(grad_out: Tensor, kernels: Tensor, padding: str) -> Tensor:
    return torch.empty_like(grad_out)


@_grad_kernels_op.register_fake
def _(grad_out: Tensor, images: Tensor, padding: str, kernel_channels: int) -> Tensor:
    batch, _, height, width = images.shape
    return images.new_empty((batch, kernel_channels, height, width))


# Autograd. With A(x, k) the filter: grad_images(g, k) = A(·, k)ᵀ g and grad_kernels(g, x) is the
# adjoint in k. All three are bilinear, and the derivatives of each are the other two:
#   d/dg <v, grad_images(g, k)> = A(v, k),   d/dk <v, grad_images(g, k)> = grad_kernels(g, v)
#   d/dg <w, grad_kernels(g, x)> = A(x, w),  d/dx <w, grad_kernels(g, x)> = grad_images(g, w)
def _setup_forward(ctx, inputs, output) -> None:
    images, kernels, padding = inputs
    ctx.save_for_backward(images, kernels)
    ctx.padding = padding


def _backward_forward(ctx, grad_out: Tensor):
    images, kernels = ctx.saved_tensors
    needs_images, needs_kernels, _ = ctx.needs_input_grad
    grad_images = _grad_images_op(grad_out, kernels, ctx.padding) if needs_images else None
    grad_kernels = (
        _grad_kernels_op(grad_out, images, ctx.padding, kernels.shape[1]) if needs_kernels else None
    )
    return grad_images, grad_kernels, None


def _setup_grad_images(ctx, inputs, output) -> None:
    grad_out, kernels, padding = inputs
    ctx.save_for_backward(grad_out, kernels)
    ctx.padding = padding


def _backward_grad_images(ctx, upstream: Tensor):
    grad_out, kernels = ctx.saved_tensors
    needs_grad_out, needs_kernels, _ = ctx.needs_input_grad
    d_grad_out = _kernel_filter_op(upstream, kernels, ctx.padding) if needs_grad_out else None
    d_kernels = (
        _grad_kernels_op(grad_out, upstream, ctx.padding, kernels.shape[1]) if needs_kernels else None
    )
    return d_grad_out, d_kernels, None


def _setup_grad_kernels(ctx, inputs, output) -> None:
    grad_out, images, padding, _ = inputs
    ctx.save_for_backward(grad_out, images)
    ctx.padding = padding


def _backward_grad_kernels(ctx, upstream: Tensor):
    grad_out, images = ctx.saved_tensors
    needs_grad_out, needs_images, _, _ = ctx.needs_input_grad
    d_grad_out = _kernel_filter_op(images, upstream, ctx.padding) if needs_grad_out else None
    d_images = _grad_images_op(grad_out, upstream, ctx.padding) if needs_images else None
    return d_grad_out, d_images, None, None


_kernel_filter_op.register_autograd(_backward_forward, setup_context=_setup_forward)
_grad_images_op.register_autograd(_backward_grad_images, setup_context=_setup_grad_images)
_grad_kernels_op.register_autograd(_backward_grad_kernels, setup_context=_setup_grad_kernels)


def kernel_filter(images: Tensor, kernels: Tensor, padding: str = "zeros") -> Tensor:
    """Filter every pixel of every image with its own K×K kernel.

    ``out[b, c, y, x] = Σ_{i,j} images[b, c, y+i−r, x+j−r] · kernels[b, g(c)·K² + i·K + j, y, x]``
    with r = K // 2 and g(c) = c when kernels are per channel (G = C), 0 when shared (G = 1);
    the (g, i, j) order is the one `torch.nn.functional.unfold` produces.

    Args:
        images: (B, C, H, W) float tensor, typically [0, 1] images; any strides.
        kernels: (B, G·K·K, H, W), same dtype and device, G = C or G = 1, K odd in 1..15; any
            strides. Values are used as given (normalize them, e.g. with a softmax, beforehand).
            Where both readings fit (C an odd square), G = C is chosen.
        padding: how pixels outside the image are read: ``"zeros"``, ``"reflect"`` (mirror without
            repeating the edge; needs H, W > K // 2) or ``"replicate"`` (repeat the edge).

    Returns:
        (B, C, H, W) tensor in the images' dtype and memory format. Differentiable in both
        arguments (to any order). float16 and bfloat16 accumulate in float32.

    Raises:
        ValueError: wrong rank, batch or H×W mismatch, a channel count that is neither C·K² nor K²
            for an odd K ≤ 15, dtype or device mismatch, unknown padding, or reflect padding on an
            image not larger than K // 2.
    """
    _check_inputs(images, kernels, padding)
    return _kernel_filter_op(images, kernels, padding)


class KernelFilter(nn.Module):
    """`kernel_filter` as a module: ``KernelFilter(padding)(images, kernels)``."""

    def __init__(self, padding: str = "zeros") -> None:
        super().__init__()
        _check_padding(padding)
        self.padding = padding

    def forward(self, images: Tensor, kernels: Tensor) -> Tensor:
        return kernel_filter(images, kernels, self.padding)

    def extra_repr(self) -> str:
        return f"padding={self.padding!r}"

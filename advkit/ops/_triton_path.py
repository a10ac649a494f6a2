"""Triton kernels of the kernel filter (CUDA): forward, gradient in the images, gradient in the kernels.

Imported only when a CUDA tensor reaches the op, so CPU-only installs never load these kernels.
Under ``TRITON_INTERPRET=1`` (set before triton is imported) the same launch functions run on CPU
tensors, which is how the CPU test suite checks them.

Design, for a memory-bound op whose traffic is dominated by the B·G·K²·H·W kernels (read by the
forward and by the image gradient, written by the kernel gradient):

* One program per (image, H×W tile) handles every channel (in blocks of up to 4), so a tile of a
  shared (G = 1) kernel is read once for all channels, and each padded image tile is read K² times
  from L1/L2, never from memory again.
* Every tensor comes with its four strides; Triton specializes a unit stride, so contiguous rows
  give vectorized loads along W, and channels_last or sliced inputs work as they are.
* Padding is index arithmetic on the read side (reflect mirrors −q → q and n−1+q → n−1−q,
  replicate clamps, zeros masks), so nothing padded is ever materialized for the forward or the
  kernel gradient.
* The image gradient is a gather, without atomics: each destination pixel sums, over the K² taps,
  the grad_out·kernel products of the outputs that read it. With zeros padding the destination is
  the image itself. With reflect or replicate one image pixel is read through several padded
  positions, so the gather fills a float32 gradient over the padded image (B, C, H+2r, W+2r), and
  `fold_padding` (a few torch slice-adds over the r-wide borders) adds each border back onto the
  pixel it copies: one extra image-sized buffer, no extra kernel-sized traffic.
* Accumulation is float32 for float32, float16 and bfloat16 inputs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from advkit.ops._torch_path import fold_padding, geometry_or_raise

_PAD_CODE = {"zeros": 0, "reflect": 1, "replicate": 2}
_MAX_CHANNEL_BLOCK = 4


def _configs() -> list[triton.Config]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        # Tiny tiles so that the interpreted tests cross tile borders on tiny images.
        return [triton.Config({"BLOCK_H": 4, "BLOCK_W": 8}, num_warps=1)]
    shapes = ((4, 64, 4), (8, 32, 4), (8, 64, 4), (16, 32, 4), (4, 128, 4), (8, 128, 8), (16, 64, 8))
    return [triton.Config({"BLOCK_H": h, "BLOCK_W": w}, num_warps=n) for h, w, n in shapes]


_AUTOTUNE_KEY = ["C", "H", "W", "K", "PER_CHANNEL"]


@triton.jit
def _source(q, n, PAD: tl.constexpr):
    """The image index that padded coordinate ``q`` reads, and whether it reads the image at all."""
    if PAD == 1:  # reflect; |q| ≤ n − 1 is guaranteed by the caller's r < n check
        q = tl.abs(q)
        q = tl.where(q > n - 1, 2 * (n - 1) - q, q)
    if PAD == 2:  # replicate
        q = tl.minimum(tl.maximum(q, 0), n - 1)
    return q, (q >= 0) & (q < n)


@triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY + ["PAD"])
@triton.jit
def _forward_kernel(
    img, ker, out, C, H, W,
    si_b, si_c, si_h, si_w,
    sk_b, sk_c, sk_h, sk_w,
    so_b, so_c, so_h, so_w,
    K: tl.constexpr, PER_CHANNEL: tl.constexpr, PAD: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    R = K // 2
    tile = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    tiles_w = tl.cdiv(W, BLOCK_W)
    ys = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    xs = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    inside = (ys[:, None] < H) & (xs[None, :] < W)
    img_b = img + b * si_b
    ker_b = ker + b * sk_b
    ker_pix = (ys[:, None] * sk_h + xs[None, :] * sk_w)[None, :, :]
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        c_ok = (cs < C)[:, None, None]
        img_c = img_b + (cs * si_c)[:, None, None]
        acc = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), dtype=tl.float32)
        for i in range(K):  # rows looped, columns unrolled: compact code for K up to 15
            yy, y_ok = _source(ys + (i - R), H, PAD)
            for j in tl.static_range(K):
                xx, x_ok = _source(xs + (j - R), W, PAD)
                read = inside & y_ok[:, None] & x_ok[None, :]
                pix = (yy[:, None] * si_h + xx[None, :] * si_w)[None, :, :]
                v = tl.load(img_c + pix, mask=c_ok & read[None, :, :], other=0.0)
                if PER_CHANNEL:
                    tap = (cs * (K * K) + (i * K + j)).to(tl.int64) * sk_c
                    w = tl.load(ker_b + tap[:, None, None] + ker_pix, mask=c_ok & inside[None, :, :], other=0.0)
                else:
                    w = tl.load(ker_b + (i * K + j) * sk_c + ker_pix, mask=inside[None, :, :], other=0.0)
                acc += v.to(tl.float32) * w.to(tl.float32)
        dst = out + b * so_b + (cs * so_c)[:, None, None] + (ys[:, None] * so_h + xs[None, :] * so_w)[None, :, :]
        tl.store(dst, acc.to(out.dtype.element_ty), mask=c_ok & inside[None, :, :])


@triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY + ["OFFSET"])
@triton.jit
def _grad_images_kernel(
    gout, ker, dst, C, H, W, DH, DW,
    sg_b, sg_c, sg_h, sg_w,
    sk_b, sk_c, sk_h, sk_w,
    sd_b, sd_c, sd_h, sd_w,
    K: tl.constexpr, PER_CHANNEL: tl.constexpr, OFFSET: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # dst covers padded coordinates [−OFFSET, H + OFFSET) × [−OFFSET, W + OFFSET) (DH × DW);
    # output y reads padded row y + i − R through tap i, so padded row q is read by y = q − i + R.
    R = K // 2
    tile = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    tiles_w = tl.cdiv(DW, BLOCK_W)
    qy = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    qx = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    inside = (qy[:, None] < DH) & (qx[None, :] < DW)
    gout_b = gout + b * sg_b
    ker_b = ker + b * sk_b
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        c_ok = (cs < C)[:, None, None]
        gout_c = gout_b + (cs * sg_c)[:, None, None]
        acc = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), dtype=tl.float32)
        for i in range(K):
            ys = qy - OFFSET - i + R
            y_ok = (ys >= 0) & (ys < H)
            for j in tl.static_range(K):
                xs = qx - OFFSET - j + R
                read = inside & y_ok[:, None] & (xs >= 0)[None, :] & (xs < W)[None, :]
                g = tl.load(gout_c + (ys[:, None] * sg_h + xs[None, :] * sg_w)[None, :, :], mask=c_ok & read[None, :, :], other=0.0)
                ker_pix = (ys[:, None] * sk_h + xs[None, :] * sk_w)[None, :, :]
                if PER_CHANNEL:
                    tap = (cs * (K * K) + (i * K + j)).to(tl.int64) * sk_c
                    w = tl.load(ker_b + tap[:, None, None] + ker_pix, mask=c_ok & read[None, :, :], other=0.0)
                else:
                    w = tl.load(ker_b + (i * K + j) * sk_c + ker_pix, mask=read[None, :, :], other=0.0)
                acc += g.to(tl.float32) * w.to(tl.float32)
        out = dst + b * sd_b + (cs * sd_c)[:, None, None] + (qy[:, None] * sd_h + qx[None, :] * sd_w)[None, :, :]
        tl.store(out, acc.to(dst.dtype.element_ty), mask=c_ok & inside[None, :, :])


@triton.autotune(configs=_configs(), key=_AUTOTUNE_KEY + ["PAD"])
@triton.jit
def _grad_kernels_kernel(
    gout, img, dst, C, H, W,
    sg_b, sg_c, sg_h, sg_w,
    si_b, si_c, si_h, si_w,
    sd_b, sd_c, sd_h, sd_w,
    K: tl.constexpr, PER_CHANNEL: tl.constexpr, PAD: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    R = K // 2
    tile = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    tiles_w = tl.cdiv(W, BLOCK_W)
    ys = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    xs = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    inside = (ys[:, None] < H) & (xs[None, :] < W)
    dst_b = dst + b * sd_b
    dst_pix = ys[:, None] * sd_h + xs[None, :] * sd_w
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        c_ok = (cs < C)[:, None, None]
        pix = (ys[:, None] * sg_h + xs[None, :] * sg_w)[None, :, :]
        g = tl.load(gout + b * sg_b + (cs * sg_c)[:, None, None] + pix, mask=c_ok & inside[None, :, :], other=0.0)
        g = g.to(tl.float32)
        img_c = img + b * si_b + (cs * si_c)[:, None, None]
        for i in range(K):
            yy, y_ok = _source(ys + (i - R), H, PAD)
            for j in tl.static_range(K):
                xx, x_ok = _source(xs + (j - R), W, PAD)
                read = inside & y_ok[:, None] & x_ok[None, :]
                v = tl.load(img_c + (yy[:, None] * si_h + xx[None, :] * si_w)[None, :, :], mask=c_ok & read[None, :, :], other=0.0)
                prod = g * v.to(tl.float32)
                if PER_CHANNEL:
                    tap = (cs * (K * K) + (i * K + j)).to(tl.int64) * sd_c
                    tl.store(dst_b + tap[:, None, None] + dst_pix[None, :, :], prod.to(dst.dtype.element_ty), mask=c_ok & inside[None, :, :])
                else:
                    # Shared kernel: sum over channels; channel blocks after the first add to the
                    # partial sum the same program stored (the launcher makes dst float32 then).
                    part = tl.sum(prod, axis=0)
                    where = dst_b + (i * K + j) * sd_c + dst_pix
                    part += tl.load(where, mask=inside & (c0 > 0), other=0.0).to(tl.float32)
                    tl.store(where, part.to(dst.dtype.element_ty), mask=inside)


def _channel_block(channels: int) -> int:
    return min(triton.next_power_of_2(channels), _MAX_CHANNEL_BLOCK)


def _grid(batch: int, height: int, width: int):
    return lambda meta: (triton.cdiv(height, meta["BLOCK_H"]) * triton.cdiv(width, meta["BLOCK_W"]), batch)


def forward(images: torch.Tensor, kernels: torch.Tensor, padding: str) -> torch.Tensor:
    batch, channels, height, width = images.shape
    size, groups = geometry_or_raise(channels, kernels.shape[1])
    out = torch.empty_like(images)
    if out.numel() == 0:
        return out
    _forward_kernel[_grid(batch, height, width)](
        images, kernels, out, channels, height, width,
        *images.stride(), *kernels.stride(), *out.stride(),
        K=size, PER_CHANNEL=groups == channels, PAD=_PAD_CODE[padding], BLOCK_C=_channel_block(channels),
    )  # fmt: skip
    return out


def grad_images(grad_out: torch.Tensor, kernels: torch.Tensor, padding: str) -> torch.Tensor:
    batch, channels, height, width = grad_out.shape
    size, groups = geometry_or_raise(channels, kernels.shape[1])
    radius = size // 2
    result = torch.empty_like(grad_out)
    if result.numel() == 0:
        return result
    offset = 0 if padding == "zeros" else radius
    if offset:
        dst = torch.empty(
            (batch, channels, height + 2 * offset, width + 2 * offset), dtype=torch.float32, device=grad_out.device
        )
    else:
        dst = result
    _grad_images_kernel[_grid(batch, dst.shape[2], dst.shape[3])](
        grad_out, kernels, dst, channels, height, width, dst.shape[2], dst.shape[3],
        *grad_out.stride(), *kernels.stride(), *dst.stride(),
        K=size, PER_CHANNEL=groups == channels, OFFSET=offset, BLOCK_C=_channel_block(channels),
    )  # fmt: skip
    if dst is not result:
        result.copy_(fold_padding(dst, offset, padding))
    return result


def grad_kernels(
    grad_out: torch.Tensor, images: torch.Tensor, padding: str, kernel_channels: int
) -> torch.Tensor:
    batch, channels, height, width = images.shape
    size, groups = geometry_or_raise(channels, kernel_channels)
    result = images.new_empty((batch, kernel_channels, height, width))
    if result.numel() == 0:
        return result
    block = _channel_block(channels)
    partial_sums = groups != channels and channels > block and result.dtype != torch.float32
    dst = torch.empty(result.shape, dtype=torch.float32, device=result.device) if partial_sums else result
    _grad_kernels_kernel[_grid(batch, height, width)](
        grad_out, images, dst, channels, height, width,
        *grad_out.stride(), *images.stride(), *dst.stride(),
        K=size, PER_CHANNEL=groups == channels, PAD=_PAD_CODE[padding], BLOCK_C=block,
    )  # fmt: skip
    if dst is not result:
        result.copy_(dst)
    return result

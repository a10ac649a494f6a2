"""The AdvFilter paper's U-Net φ (Sec. 3.2): eight blocks of three 3×3 conv + ReLU.

Blocks 1–5 form the encoder (full resolution down to a 1/16 bottleneck), blocks 6–8 the decoder,
with skips from blocks 4, 3, 2 into blocks 6, 7, 8. The decoder ends at 1/2 resolution; the
output head upsamples to full resolution. Any input size works: the input is padded (replicate)
to a multiple of 16 and the output cropped back.

One deviation from the paper's text, on by default (``full_res_skip``): the head also sees block
1's full-resolution features. Without them a per-pixel kernel is predicted from features at half
resolution, which blurs the kernels across edges; it costs one concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_channels: int, out_channels: int, convs: int = 3) -> nn.Sequential:
    """``convs`` × (3×3 conv + ReLU)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def encoder_widths(width: int) -> tuple[int, int, int, int, int]:
    """Channels of blocks 1–5 for a width multiplier (64 gives 64/128/256/512/512, the paper's 512-ch bottleneck)."""
    return (width, 2 * width, 4 * width, 8 * width, 8 * width)


class UNetEncoder(nn.Module):
    """Blocks 1–5. ``forward(x)`` → [f1 (1/1), f2 (1/2), f3 (1/4), f4 (1/8), f5 (1/16)]."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = encoder_widths(width)
        self.blocks = nn.ModuleList(
            [conv_block(in_channels, w[0])] + [conv_block(w[i - 1], w[i]) for i in range(1, 5)]
        )
        self.widths = w

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            feats.append(block(F.max_pool2d(feats[-1], 2)))
        return feats


class UNetDecoder(nn.Module):
    """Blocks 6–8 plus the upsampling to full resolution.

    ``forward(feats)`` → (B, out_channels, H, W) features at full resolution, where
    out_channels = 2·width (+ width with ``full_res_skip``).
    """

    def __init__(self, width: int = 32, full_res_skip: bool = True) -> None:
        super().__init__()
        w = encoder_widths(width)
        self.block6 = conv_block(w[4] + w[3], w[3])
        self.block7 = conv_block(w[3] + w[2], w[2])
        self.block8 = conv_block(w[2] + w[1], w[1])
        self.full_res_skip = full_res_skip
        self.out_channels = w[1] + (w[0] if full_res_skip else 0)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3, f4, f5 = feats
        x = self.block6(torch.cat([self._up(f5, f4), f4], 1))
        x = self.block7(torch.cat([self._up(x, f3), f3], 1))
        x = self.block8(torch.cat([self._up(x, f2), f2], 1))
        x = self._up(x, f1)
        return torch.cat([x, f1], 1) if self.full_res_skip else x


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad H and W up to a multiple; return the padded tensor and the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)

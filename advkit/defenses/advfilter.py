"""`AdvFilter`: a denoiser as a drop-in, differentiable input defense for any classifier."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from advkit.models.checkpoint import load_denoiser, read_checkpoint_record
from advkit.models.denoisers import Denoiser, MultiHeadFiltDenoiser, PAFilt
from advkit.utils import check_value_range, floating_dtype


class AdvFilter(nn.Module):
    """Denoise [0, 1] images with an AdvFilter denoiser before they reach a classifier.

    Args:
        denoiser: ``"default"`` (the shipped Filt checkpoint), a shipped name (see
            `advkit.zoo.list_denoisers`), a checkpoint path, or a `Denoiser` instance.
        head: for multi-head checkpoints, the head to use (0-based; default: the checkpoint's).

    ``forward(images)``: (B, 3, H, W) in [0, 1] → denoised images, same shape, in [0, 1];
    differentiable end to end (the kernel-filter op has gradients), so
    ``nn.Sequential(AdvFilter(), classifier)`` can be attacked adaptively.
    """

    def __init__(self, denoiser: str | os.PathLike[str] | Denoiser = "default", *, head: int | None = None) -> None:
        super().__init__()
        if isinstance(denoiser, Denoiser):
            self.denoiser = denoiser
            self.source = f"<{denoiser.arch} instance>"
            self.record: dict[str, Any] = {"config": denoiser.config}
        else:
            from advkit.zoo import resolve_denoiser

            path = resolve_denoiser(os.fspath(denoiser))
            self.denoiser = load_denoiser(path)
            self.source = str(denoiser)
            self.record = read_checkpoint_record(path)
        if head is not None:
            if not isinstance(self.denoiser, MultiHeadFiltDenoiser):
                from advkit.errors import UsageError

                raise UsageError(f"--head applies to multi-head denoisers; {self.source} is {self.denoiser.arch}")
            self.denoiser.default_head = head
        self.denoiser.eval()
        for p in self.denoiser.parameters():
            p.requires_grad_(False)

    @property
    def arch(self) -> str:
        return self.denoiser.arch

    def _weights_dtype(self, images: torch.Tensor) -> torch.dtype:
        check_value_range(images)
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
        return floating_dtype(self.denoiser) or torch.float32

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Computed in the weights' dtype and returned in the input's, as the classical defenses
        # return it (a float64 batch, e.g. from a gradcheck or an ART pipeline, is not an error).
        dtype = self._weights_dtype(images)
        return self.denoiser(images.to(dtype), clamp=True).to(images.dtype)

    def forward_all(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """PA-Filt's parts (out, sl, m, uncertainty, weight); other archs give only ``out``."""
        if isinstance(self.denoiser, PAFilt):
            dtype = self._weights_dtype(images)
            parts = self.denoiser.forward_all(images.to(dtype), clamp=True)
            return {name: part.to(images.dtype) for name, part in parts.items()}
        return {"out": self(images)}

    @torch.no_grad()
    def denoise_large(
        self, image: torch.Tensor, tile: int = 512, overlap: int = 96, with_parts: bool = False
    ) -> dict[str, torch.Tensor]:
        """Denoise one large image (1, 3, H, W) tile by tile so memory stays bounded.

        Tiles of ``tile``² pixels with ``overlap`` pixels of context on each side are denoised
        separately and blended with linear ramps across the overlaps. Returns ``{"out": ...}`` (and
        PA-Filt's ``weight``/``uncertainty`` maps with ``with_parts``), each (1, C, H, W).

        The U-Net sees farther than any practical overlap, so a tile's output near its cut edges
        differs from the whole image's; with the shipped Filt on a 700×901 photo the tiled output
        (tile 512) differs from the untiled one by at most 12/255 at 32 px of overlap, 4/255 at 64
        and 2/255 at 96 (mean 0.01/255), hence the default of 96, for 1.5× the pixels per tile.
        """
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"denoise_large takes one image (1, 3, H, W), got {tuple(image.shape)}")
        _, _, h, w = image.shape
        if h <= tile + 2 * overlap and w <= tile + 2 * overlap:
            parts = self.forward_all(image) if with_parts else {"out": self(image)}
            return {k: v for k, v in parts.items() if k in ("out", "weight", "uncertainty")}
        acc: dict[str, torch.Tensor] = {}
        norm = torch.zeros(1, 1, h, w, device=image.device)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                ya, yb = max(0, y0 - overlap), min(h, y0 + tile + overlap)
                xa, xb = max(0, x0 - overlap), min(w, x0 + tile + overlap)
                crop = image[..., ya:yb, xa:xb]
                parts = self.forward_all(crop) if with_parts else {"out": self(crop)}
                weight = _ramp(yb - ya, xb - xa, overlap, (ya > 0, yb < h, xa > 0, xb < w), image.device)
                for key, value in parts.items():
                    if key not in ("out", "weight", "uncertainty"):
                        continue
                    if key not in acc:
                        acc[key] = torch.zeros(1, value.shape[1], h, w, device=image.device)
                    acc[key][..., ya:yb, xa:xb] += value * weight
                norm[..., ya:yb, xa:xb] += weight
        return {k: v / norm for k, v in acc.items()}

    def extra_repr(self) -> str:
        return f"source={self.source!r}, arch={self.arch!r}"


def _ramp(h: int, w: int, overlap: int, inner: tuple[bool, bool, bool, bool], device: torch.device) -> torch.Tensor:
    """Blend weights for a tile: 1 inside, falling linearly to ~0 across overlaps shared with neighbours."""

    def axis(n: int, lo: bool, hi: bool) -> torch.Tensor:
        v = torch.ones(n, device=device)
        if overlap > 0:
            ramp = (torch.arange(min(2 * overlap, n), device=device) + 0.5) / min(2 * overlap, n)
            if lo:
                v[: len(ramp)] = torch.minimum(v[: len(ramp)], ramp)
            if hi:
                v[n - len(ramp) :] = torch.minimum(v[n - len(ramp) :], ramp.flip(0))
        return v

    top, bottom, left, right = inner
    return (axis(h, top, bottom)[:, None] * axis(w, left, right)[None, :])[None, None]


class DefendedClassifier(nn.Module):
    """``classifier(defense(images))`` as one module (for attacking the pipeline end to end)."""

    def __init__(self, defense: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.defense = defense
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.defense(images))

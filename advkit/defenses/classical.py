"""Classical input-transformation baselines (ART's implementations) behind one interface.

Each is an ``nn.Module`` on [0, 1] NCHW float tensors. They are not differentiable, so when a
gradient is asked for they use BPDA (Athalye et al., 2018): the forward pass applies the
transformation, the backward pass is the identity. ``differentiable = False`` marks them so an
adaptive evaluation reports that it used BPDA.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn


class _BPDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: ARTInputDefense) -> torch.Tensor:  # noqa: ANN401
        return module.transform(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return grad, None


class ARTInputDefense(nn.Module):
    """A numpy preprocessor from ART applied to torch batches, with BPDA gradients."""

    differentiable = False
    name = "art"

    def __init__(self, preprocessor: Any, **config: Any) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.config = {"name": self.name, **config}

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        x_np = x.detach().float().cpu().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = self.preprocessor(x_np)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device, x.dtype).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        if torch.is_grad_enabled() and images.requires_grad:
            return _BPDA.apply(images, self)
        return self.transform(images)


class JPEGDefense(ARTInputDefense):
    """JPEG compression at ``quality`` (ART ``JpegCompression``)."""

    name = "jpeg"

    def __init__(self, quality: int = 75) -> None:
        from art.defences.preprocessor import JpegCompression

        super().__init__(JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=True), quality=quality)


class SmoothingDefense(ARTInputDefense):
    """Median filtering over ``window_size``² windows (ART ``SpatialSmoothing``)."""

    name = "smoothing"

    def __init__(self, window_size: int = 3) -> None:
        from art.defences.preprocessor import SpatialSmoothing

        super().__init__(
            SpatialSmoothing(window_size=window_size, channels_first=True, clip_values=(0.0, 1.0)),
            window_size=window_size,
        )


class BitDepthDefense(ARTInputDefense):
    """Feature squeezing to ``bit_depth`` bits per channel (ART ``FeatureSqueezing``)."""

    name = "bitdepth"

    def __init__(self, bit_depth: int = 4) -> None:
        from art.defences.preprocessor import FeatureSqueezing

        super().__init__(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bit_depth), bit_depth=bit_depth)


class TVMDefense(ARTInputDefense):
    """Total-variation minimization on randomly dropped pixels (ART ``TotalVarMin``).

    Random: ``seed`` fixes NumPy's generator before each call so results repeat.
    """

    name = "tvm"

    def __init__(self, prob: float = 0.3, lamb: float = 0.5, max_iter: int = 10, seed: int = 0) -> None:
        from art.defences.preprocessor import TotalVarMin

        super().__init__(
            TotalVarMin(prob=prob, norm=2, lamb=lamb, max_iter=max_iter, clip_values=(0.0, 1.0)),
            prob=prob, lamb=lamb, max_iter=max_iter, seed=seed,
        )
        self.seed = seed

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        # ART's TotalVarMin reads each image as (H, W, C) and draws its pixel mask from np.random.
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            return super().transform(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        finally:
            np.random.set_state(state)

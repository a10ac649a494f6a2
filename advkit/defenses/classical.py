"""Classical input-transformation baselines behind one interface.

Each is an ``nn.Module`` on [0, 1] NCHW float tensors. JPEG, bit-depth reduction and TV
minimization are ART's implementations and not differentiable, so when a gradient is asked for
they use BPDA (Athalye et al., 2018): the forward pass applies the transformation, the backward
pass is the gradient of a differentiable stand-in — for JPEG `differentiable_jpeg`, for TV
minimization `tv_minimize_unrolled` (its solver unrolled in torch), for bit-depth reduction the
identity. ``differentiable = False`` marks them and ``gradient`` names the stand-in, so an
adaptive evaluation reports what it used. Median smoothing is computed in torch (equal to ART's
``SpatialSmoothing``) and differentiates exactly: the gradient goes to each window's median pixel.

Two are random: TV minimization drops random pixels and Gaussian noise adds noise. With a
``seed`` they draw the same every call (a deterministic defense whose randomness the attacker
knows); with ``seed=None`` each call draws afresh, from torch's global generator, as deployed
(``randomized = True``). Attack those with EOT (``eot_samples`` of the gradient attacks).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.defenses.jpeg_approx import differentiable_jpeg
from advkit.defenses.tvm_approx import art_tvm_masks, numpy_global_seed, tv_minimize_unrolled
from advkit.utils import check_value_range


class _BPDA(torch.autograd.Function):
    """Forward: the defense's transform; backward: the vector-Jacobian product of its stand-in."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: ARTInputDefense) -> torch.Tensor:  # noqa: ANN401
        ctx.module = module
        # The backward differentiates the stand-in under the forward's random draw (its masks).
        ctx.draw = module.draw = module.new_draw()
        if module.stand_in is not None:  # the identity backward needs no input
            ctx.save_for_backward(x)
        return module.transform(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        if ctx.module.stand_in is None:
            return grad, None
        (x,) = ctx.saved_tensors
        ctx.module.draw = ctx.draw
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(ctx.module.stand_in(x), x, grad)
        return grad_x, None


class ARTInputDefense(nn.Module):
    """A numpy preprocessor from ART applied to torch batches, with BPDA gradients.

    ``stand_in``: the differentiable approximation whose gradient BPDA uses (None: the identity);
    ``gradient``: its name in reports.
    """

    differentiable = False
    gradient = "BPDA"
    name = "art"
    randomized = False
    stand_in: Callable[[torch.Tensor], torch.Tensor] | None = None
    # The current call's random draw (`new_draw`), read by `transform` and `stand_in`.
    draw: int | None = None

    def new_draw(self) -> int | None:
        """The randomness of one call (None for a deterministic preprocessor)."""
        return None

    def __init__(self, preprocessor: Any, **config: Any) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.config = {"name": self.name, **config}

    # The value range the preprocessor is given and returns: 1 for [0, 1] floats, 255 for 8-bit levels.
    art_scale = 1.0

    def to_art(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (float, [0, 1]) as the preprocessor takes it, in [0, ``art_scale``]."""
        return x

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        x_np = self.to_art(x.detach().float()).cpu().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = self.preprocessor(x_np)
        out = np.ascontiguousarray(out, dtype=np.float32) / np.float32(self.art_scale)
        return torch.from_numpy(out).to(x.device, x.dtype).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        check_value_range(images, f"{self.name}: images")
        if images.shape[0] == 0:  # (ART's preprocessors fail on an empty batch)
            return images.clone()
        if torch.is_grad_enabled() and images.requires_grad:
            return _BPDA.apply(images, self)
        self.draw = self.new_draw()
        return self.transform(images)


class JPEGDefense(ARTInputDefense):
    """JPEG compression at ``quality`` (ART ``JpegCompression``, i.e. Pillow); BPDA through
    `differentiable_jpeg`.

    The image goes to the codec as 8-bit levels rounded to the nearest (``rounding="nearest"``),
    as saving it would. ART's own conversion truncates (``rounding="truncate"``): then a step of
    −1e-4 drops a pixel a whole level, and an attack at any radius below 1/255 buys a one-sided
    1/255 perturbation — on CIFAR-10 (resnet20, adaptive PGD-20) that took JPEG from 80 % to 63 %
    already at 1e-4, where with rounding no perturbation below 0.5/255 changes its output at all.
    """

    name = "jpeg"
    gradient = "BPDA (JPEG approx.)"

    def __init__(self, quality: int = 75, rounding: str = "nearest") -> None:
        from art.defences.preprocessor import JpegCompression

        if rounding not in ("nearest", "truncate"):
            raise ValueError(f"jpeg: rounding must be 'nearest' or 'truncate', got {rounding!r}")
        # Given 0..255 values ART casts them to uint8 as they are, so rounding them first decides.
        super().__init__(JpegCompression(clip_values=(0.0, 255.0), quality=quality, channels_first=True),
                         quality=quality, rounding=rounding)
        self.quality = quality
        self.rounding = rounding

    art_scale = 255.0

    def to_art(self, x: torch.Tensor) -> torch.Tensor:
        levels = x.clamp(0, 1) * 255
        return levels.round() if self.rounding == "nearest" else levels.floor()

    def stand_in(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return differentiable_jpeg(x, self.quality)


class SmoothingDefense(nn.Module):
    """Median filtering over ``window_size``² windows per channel, in torch.

    Equal to ART's ``SpatialSmoothing`` (SciPy's ``median_filter``, borders mirrored with the edge
    pixel repeated) and differentiable: each output pixel's gradient goes to its window's median.
    ``window_size`` is odd, so the median is one of the window's pixels.
    """

    name = "smoothing"
    differentiable = True
    gradient = "exact"

    def __init__(self, window_size: int = 3) -> None:
        super().__init__()
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"smoothing: window_size must be odd and >= 1, got {window_size}")
        self.window_size = window_size
        self.config = {"name": self.name, "window_size": window_size}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        check_value_range(images, f"{self.name}: images")
        r = self.window_size // 2
        if r == 0:
            return images
        x = _mirror_pad(_mirror_pad(images, r, dim=-1), r, dim=-2)
        windows = x.unfold(-2, self.window_size, 1).unfold(-2, self.window_size, 1)  # (B, C, H, W, k, k)
        return windows.flatten(-2).median(dim=-1).values


def _mirror_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """SciPy's ``mode='reflect'`` along ``dim``: (c b a | a b c | c b a), any r <= the size."""
    n = x.shape[dim]
    if r > n:
        raise ValueError(f"smoothing: a window of {2 * r + 1} needs images of at least {r} pixels per side")
    head = x.narrow(dim, 0, r).flip(dim)
    tail = x.narrow(dim, n - r, r).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


class BitDepthDefense(ARTInputDefense):
    """Feature squeezing to ``bit_depth`` bits per channel (ART ``FeatureSqueezing``)."""

    name = "bitdepth"

    def __init__(self, bit_depth: int = 4) -> None:
        from art.defences.preprocessor import FeatureSqueezing

        super().__init__(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bit_depth), bit_depth=bit_depth)


class TVMDefense(ARTInputDefense):
    """Total-variation minimization on randomly dropped pixels (ART ``TotalVarMin``).

    Random: ``seed`` fixes NumPy's generator before each call so results repeat (the masks depend
    on each image's place in the batch); ``seed=None`` draws new masks every call, as ART's own
    ``TotalVarMin`` does (their NumPy seed comes from torch's global generator, so
    ``torch.manual_seed`` repeats a run). ``backward`` picks the BPDA stand-in: ``"solver"`` (the
    default) differentiates `tv_minimize_unrolled`, gradient descent on ART's own objective with
    the same masks as the forward pass; ``"identity"`` is the plain BPDA of Athalye et al.
    """

    name = "tvm"

    def __init__(
        self, prob: float = 0.3, lamb: float = 0.5, max_iter: int = 10, seed: int | None = 0, backward: str = "solver"
    ) -> None:
        from art.defences.preprocessor import TotalVarMin

        if backward not in ("solver", "identity"):
            raise ValueError(f"tvm: backward must be 'solver' or 'identity', got {backward!r}")
        super().__init__(
            TotalVarMin(prob=prob, norm=2, lamb=lamb, max_iter=max_iter, clip_values=(0.0, 1.0)),
            prob=prob, lamb=lamb, max_iter=max_iter, seed=seed, backward=backward,
        )
        self.prob = prob
        self.lamb = lamb
        self.seed = seed
        self.randomized = seed is None
        self.backward = backward
        if backward == "identity":
            self.stand_in = None
        self.gradient = "BPDA (TV solver, unrolled)" if backward == "solver" else "BPDA"

    def new_draw(self) -> int:
        """The NumPy seed of one call's masks: ``seed``, or a fresh one where it is None."""
        if self.seed is not None:
            return self.seed
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        # ART's TotalVarMin reads each image as (H, W, C) and draws its pixel mask from np.random.
        with numpy_global_seed(self._call_seed()):
            return super().transform(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def stand_in(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        return tv_minimize_unrolled(x, art_tvm_masks(b, h, w, c, self.prob, self._call_seed()), self.lamb)

    def _call_seed(self) -> int:
        return self.new_draw() if self.draw is None else self.draw


class GaussianNoiseDefense(nn.Module):
    """Additive Gaussian noise of standard deviation ``sigma``, clipped to [0, 1] (ART's
    ``GaussianAugmentation`` with ``augmentation=False`` applied at prediction): the simplest
    randomized defense, and exactly differentiable.

    ``seed=None`` (default) draws new noise every call from torch's global generator; an integer
    ``seed`` adds the same noise every call (a fixed perturbation the attacker can know).
    """

    name = "gaussian"
    differentiable = True
    gradient = "exact"

    def __init__(self, sigma: float = 0.05, seed: int | None = None) -> None:
        super().__init__()
        if not 0 <= sigma <= 1:
            raise ValueError(f"gaussian: sigma must lie in [0, 1] on the [0, 1] pixel scale, got {sigma}")
        self.sigma = sigma
        self.seed = seed
        self.randomized = seed is None and sigma > 0
        self.config = {"name": self.name, "sigma": sigma, "seed": seed}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"{self.name}: expected images (B, C, H, W), got {tuple(images.shape)}")
        check_value_range(images, f"{self.name}: images")
        if self.seed is None:
            noise = torch.randn_like(images)
        else:
            generator = torch.Generator(images.device).manual_seed(self.seed)
            noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (images + self.sigma * noise).clamp(0, 1)

"""The denoiser family: AdvFilter's Add / Filt / multi-head Filt / PA-Filt, and Pasadena's KPN.

Every filtering model calls `advkit.ops.kernel_filter`. All take a [0, 1] image batch
(B, 3, H, W) of any size and return the denoised batch of the same shape. During training the
output is *not* clamped (clamping inside the graph kills the gradient of saturated pixels and
made the paper's probe collapse to constant images); ``forward(..., clamp=True)`` (the default
in eval mode) clamps to [0, 1] for inference.

Architectures (``arch``):

- ``unet-add``: Ĩ = Î + φ(Î) (HGD-style additive denoiser).
- ``unet-filt``: Ĩ = Î ⊛ φ(Î), a K×K kernel per pixel and channel (3K² maps, G = 3).
- ``unet-filt-multihead``: four Filt heads on one U-Net; during training each sample updates the
  head of its eps decade (head i ↔ {1, 3, 5}·10^(i−5)); at inference a chosen head.
- ``pafilt``: Y-Net (shared encoder, decoders φ_sl and φ_m), uncertainty maps (max over each pixel's
  3K² kernel values), a fusion net (6 conv + sigmoid) giving W, and Ĩ = W ⊙ Ĩ_sl + (1 − W) ⊙ Ĩ_m.
- ``kpn``: one K×K kernel per pixel shared by the channels (G = 1), Pasadena's denoiser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advkit.models.unet import UNetDecoder, UNetEncoder, pad_to_multiple
from advkit.ops import kernel_filter

DENOISER_ARCHS = ("unet-add", "unet-filt", "unet-filt-multihead", "pafilt", "kpn")
NUM_HEADS = 4


def eps_to_head(eps: torch.Tensor) -> torch.Tensor:
    """Multi-head routing by decade: eps in [1e-4, 1e-3) → head 0, … , [1e-1, 1] → head 3.

    Radii below 1e-4 (and clean rows, eps = 0) go to head 0. The 1e-6 slack in log10 absorbs
    float32 radii such as 0.01 → 0.0099999998.
    """
    e = torch.as_tensor(eps, dtype=torch.float64).clamp_min(1e-12)
    return (torch.floor(torch.log10(e) + 1e-6) + 4).clamp(0, NUM_HEADS - 1).long()


def identity_kernel_bias(groups: int, size: int) -> torch.Tensor:
    """(groups·K²,) bias that makes a zero-weight head output the identity kernel."""
    bias = torch.zeros(groups, size * size)
    bias[:, (size * size) // 2] = 1.0
    return bias.flatten()


class KernelHead(nn.Module):
    """Features → G·K² kernel maps, initialised to the identity filter."""

    def __init__(self, in_channels: int, groups: int, size: int, hidden: int) -> None:
        super().__init__()
        self.groups, self.size = groups, size
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, groups * size * size, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(identity_kernel_bias(groups, size))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(feats))


class ResidualHead(nn.Module):
    """Features → a 3-channel residual, initialised to zero (identity denoiser)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(feats))


def _check_input(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"denoisers take images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"denoisers take float images in [0, 1], got dtype {x.dtype}")


class Denoiser(nn.Module):
    """Base class: holds the config that `save_denoiser` writes and `load_denoiser` rebuilds from."""

    arch = "denoiser"

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = {"arch": self.arch, **config}

    def _finish(self, out: torch.Tensor, size: tuple[int, int], clamp: bool | None) -> torch.Tensor:
        out = out[..., : size[0], : size[1]]
        if clamp if clamp is not None else not self.training:
            out = out.clamp(0, 1)
        return out


class AddDenoiser(Denoiser):
    """``unet-add``: Ĩ = Î + φ(Î). ``forward(x, clamp=None)``: x (B, 3, H, W) in [0, 1]."""

    arch = "unet-add"

    def __init__(self, width: int = 32, full_res_skip: bool = True) -> None:
        super().__init__(width=width, full_res_skip=full_res_skip)
        self.encoder = UNetEncoder(3, width)
        self.decoder = UNetDecoder(width, full_res_skip)
        self.head = ResidualHead(self.decoder.out_channels, width)

    def forward(self, x: torch.Tensor, clamp: bool | None = None) -> torch.Tensor:
        _check_input(x)
        xp, size = pad_to_multiple(x)
        out = xp + self.head(self.decoder(self.encoder(xp)))
        return self._finish(out, size, clamp)


class FiltDenoiser(Denoiser):
    """``unet-filt`` (G = 3) and ``kpn`` (G = 1): Ĩ = kernel_filter(Î, φ(Î)).

    ``forward(x, clamp=None)`` → denoised (B, 3, H, W); ``kernels(x)`` → (B, G·K², H, W).
    """

    arch = "unet-filt"

    def __init__(
        self, width: int = 32, kernel_size: int = 5, groups: int = 3, full_res_skip: bool = True,
        padding: str = "replicate",
    ) -> None:
        if kernel_size % 2 == 0 or not 1 <= kernel_size <= 15:
            raise ValueError(f"kernel_size must be odd in 1..15, got {kernel_size}")
        if groups not in (1, 3):
            raise ValueError(f"groups must be 3 (a kernel per channel) or 1 (shared), got {groups}")
        super().__init__(width=width, kernel_size=kernel_size, groups=groups, full_res_skip=full_res_skip,
                         padding=padding)
        self.kernel_size, self.groups, self.padding = kernel_size, groups, padding
        self.encoder = UNetEncoder(3, width)
        self.decoder = UNetDecoder(width, full_res_skip)
        self.head = KernelHead(self.decoder.out_channels, groups, kernel_size, width)

    def _kernels_padded(self, xp: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(xp)))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted per-pixel kernels (B, G·K², H, W) for x (B, 3, H, W)."""
        _check_input(x)
        xp, (h, w) = pad_to_multiple(x)
        return self._kernels_padded(xp)[..., :h, :w]

    def forward(self, x: torch.Tensor, clamp: bool | None = None) -> torch.Tensor:
        _check_input(x)
        xp, size = pad_to_multiple(x)
        out = kernel_filter(xp, self._kernels_padded(xp).to(xp.dtype), padding=self.padding)
        return self._finish(out, size, clamp)


class KPNDenoiser(FiltDenoiser):
    """``kpn``: a U-Net predicting one K×K kernel per pixel shared by the channels (G = 1)."""

    arch = "kpn"

    def __init__(self, width: int = 16, kernel_size: int = 5, full_res_skip: bool = True,
                 padding: str = "replicate") -> None:
        super().__init__(width=width, kernel_size=kernel_size, groups=1, full_res_skip=full_res_skip,
                         padding=padding)
        self.config = {"arch": self.arch, "width": width, "kernel_size": kernel_size,
                       "full_res_skip": full_res_skip, "padding": padding}


class MultiHeadFiltDenoiser(Denoiser):
    """``unet-filt-multihead``: four Filt heads on one U-Net, routed by eps decade in training.

    ``forward(x, head=None, eps=None, clamp=None)``: with ``eps`` (B,) each sample uses its decade's
    head (training); otherwise ``head`` (0-based) or the configured ``default_head``.
    """

    arch = "unet-filt-multihead"

    def __init__(self, width: int = 32, kernel_size: int = 5, full_res_skip: bool = True,
                 padding: str = "replicate", default_head: int = NUM_HEADS - 1) -> None:
        super().__init__(width=width, kernel_size=kernel_size, full_res_skip=full_res_skip, padding=padding,
                         default_head=default_head)
        self.kernel_size, self.padding = kernel_size, padding
        self.encoder = UNetEncoder(3, width)
        self.decoder = UNetDecoder(width, full_res_skip)
        self.heads = nn.ModuleList(
            [KernelHead(self.decoder.out_channels, 3, kernel_size, width) for _ in range(NUM_HEADS)]
        )
        self.default_head = default_head

    @property
    def default_head(self) -> int:
        return int(self.config["default_head"])

    @default_head.setter
    def default_head(self, head: int) -> None:
        if not 0 <= int(head) < NUM_HEADS:
            raise ValueError(f"head must be in 0..{NUM_HEADS - 1}, got {head}")
        self.config["default_head"] = int(head)

    def forward(
        self, x: torch.Tensor, head: int | None = None, eps: torch.Tensor | None = None,
        clamp: bool | None = None,
    ) -> torch.Tensor:
        _check_input(x)
        xp, size = pad_to_multiple(x)
        feats = self.decoder(self.encoder(xp))
        if eps is not None:
            route = eps_to_head(eps).to(x.device)
            kernels = torch.empty(
                (xp.shape[0], 3 * self.kernel_size**2, *xp.shape[-2:]), device=xp.device, dtype=xp.dtype
            )
            for h in route.unique().tolist():
                sel = route == h
                kernels[sel] = self.heads[h](feats[sel]).to(xp.dtype)
        else:
            h = self.default_head if head is None else int(head)
            if not 0 <= h < NUM_HEADS:
                raise ValueError(f"head must be in 0..{NUM_HEADS - 1}, got {h}")
            kernels = self.heads[h](feats).to(xp.dtype)
        out = kernel_filter(xp, kernels, padding=self.padding)
        return self._finish(out, size, clamp)


FUSION_INPUTS = {"uncertainty": 2, "uncertainty+image": 5}  # what the fusion net reads → its channels


class FusionNet(nn.Module):
    """C(·): 6 conv layers + sigmoid, (B, in_channels, H, W) → weight map W (B, 1, H, W).

    The paper's input is [U_sl, U_m] (2 channels); ``uncertainty+image`` appends the input image.
    """

    def __init__(self, hidden: int = 32, in_channels: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [in_channels] + [hidden] * 5
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        # He initialisation with zero biases: PyTorch's default conv init shrinks the signal ~3× per
        # layer, so after six layers W was constant to 5e-4 whatever the uncertainty maps said and the
        # trained net never learned to read them (measured: W = 0.939 at every radius).
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, uncertainty: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(uncertainty))


class PAFilt(Denoiser):
    """``pafilt``: the perturbation-aware filter (AdvFilter Sec. 4).

    ``forward(x, clamp=None)`` → Ĩ; ``forward_all(x)`` → dict with ``out``, ``sl``, ``m`` (the two
    filtered images), ``uncertainty`` (B, 2, H, W) and ``weight`` (B, 1, H, W).
    """

    arch = "pafilt"
    M_RADII = (1e-1, 3e-1, 5e-1)  # φ_m trains on these radii only

    def __init__(self, width: int = 32, kernel_size: int = 5, full_res_skip: bool = True,
                 padding: str = "replicate", fusion_hidden: int = 32, fusion_input: str = "uncertainty") -> None:
        if fusion_input not in FUSION_INPUTS:
            raise ValueError(f"fusion_input must be one of {', '.join(FUSION_INPUTS)}, got {fusion_input!r}")
        super().__init__(width=width, kernel_size=kernel_size, full_res_skip=full_res_skip, padding=padding,
                         fusion_hidden=fusion_hidden, fusion_input=fusion_input)
        self.fusion_input = fusion_input
        self.kernel_size, self.padding = kernel_size, padding
        self.encoder = UNetEncoder(3, width)
        self.decoder_sl = UNetDecoder(width, full_res_skip)
        self.decoder_m = UNetDecoder(width, full_res_skip)
        self.head_sl = KernelHead(self.decoder_sl.out_channels, 3, kernel_size, width)
        self.head_m = KernelHead(self.decoder_m.out_channels, 3, kernel_size, width)
        self.fusion = FusionNet(fusion_hidden, FUSION_INPUTS[fusion_input])

    def branches(self, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ĩ_sl, Ĩ_m, kernels_sl, kernels_m) for a padded batch."""
        feats = self.encoder(xp)
        k_sl = self.head_sl(self.decoder_sl(feats)).to(xp.dtype)
        k_m = self.head_m(self.decoder_m(feats)).to(xp.dtype)
        return (kernel_filter(xp, k_sl, padding=self.padding), kernel_filter(xp, k_m, padding=self.padding),
                k_sl, k_m)

    def forward_all(self, x: torch.Tensor, clamp: bool | None = None) -> dict[str, torch.Tensor]:
        _check_input(x)
        xp, size = pad_to_multiple(x)
        sl, m, k_sl, k_m = self.branches(xp)
        uncertainty = torch.cat([k_sl.amax(1, keepdim=True), k_m.amax(1, keepdim=True)], 1)
        cues = uncertainty if self.fusion_input == "uncertainty" else torch.cat([uncertainty, xp], 1)
        weight = self.fusion(cues)
        out = weight * sl + (1 - weight) * m
        h, w = size
        return {
            "out": self._finish(out, size, clamp),
            "sl": self._finish(sl, size, clamp),
            "m": self._finish(m, size, clamp),
            "uncertainty": uncertainty[..., :h, :w],
            "weight": weight[..., :h, :w],
        }

    def forward(
        self, x: torch.Tensor, clamp: bool | None = None, return_all: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        parts = self.forward_all(x, clamp)
        return parts if return_all else parts["out"]


_ARCH_CLASSES: dict[str, type[Denoiser]] = {
    "unet-add": AddDenoiser,
    "unet-filt": FiltDenoiser,
    "unet-filt-multihead": MultiHeadFiltDenoiser,
    "pafilt": PAFilt,
    "kpn": KPNDenoiser,
}


def create_denoiser(arch: str, **config: Any) -> Denoiser:
    """Build a denoiser by architecture name with its config (width, kernel_size, ...)."""
    from advkit.errors import UnknownNameError

    try:
        cls = _ARCH_CLASSES[arch]
    except KeyError:
        raise UnknownNameError(f"unknown denoiser architecture {arch!r}; known: {', '.join(DENOISER_ARCHS)}") from None
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"bad config for {arch}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

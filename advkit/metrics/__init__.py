"""Image-quality metrics on [0, 1] float NCHW images, each returning one value per image.

- `psnr` — peak signal-to-noise ratio (dB), as scikit-image computes it per image.
- `ssim` — structural similarity, equal to scikit-image's with a Gaussian window (σ = 1.5),
  population covariances and its border crop; differentiable.
- `psnr_local` — PSNR_L of the Pasadena paper: mean PSNR over all 8 × 8 windows at stride 1.
- `brisque` — the no-reference BRISQUE score with the LIVE-trained model shipped in the package.

Every function takes ``reduction='none'`` (a (B,) tensor) or ``'mean'``; each has a thin
`torch.nn.Module` twin (`PSNR`, `SSIM`, `PSNRLocal`, `BRISQUE`).
"""

from advkit.metrics.brisque import BRISQUE, brisque, brisque_features
from advkit.metrics.psnr import PSNR, psnr
from advkit.metrics.psnr_local import PSNRLocal, psnr_local
from advkit.metrics.ssim import SSIM, ssim

__all__ = [
    "BRISQUE",
    "PSNR",
    "PSNRLocal",
    "SSIM",
    "brisque",
    "brisque_features",
    "psnr",
    "psnr_local",
    "ssim",
]

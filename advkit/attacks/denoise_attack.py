"""The adversarial denoise attack experiment (Pasadena's protocol) over a dataset.

Each clean image gets Gaussian noise (σ = 0.1, seeded per image, quantized to 8 bits so the stored
noisy input is exactly what was attacked); the label to flip is the model's own prediction on the
noisy input. A method then produces the output image: ``pasadena`` (the attack), ``denoise`` (the
KPN alone, as a reference: denoising by itself changes some predictions), a baseline attack on the
noisy input (Pasadena's six: ``fgsm``, ``mifgsm``, ``dim``, ``tifgsm``, ``timifgsm``, ``tidim``; and the
later transfer attacks ``nifgsm``, ``sinifgsm``, ``vmifgsm``, ``vnifgsm``) or a baseline after
denoising (``denoise+mifgsm``, ...). Reported per method: white-box success (prediction changed),
success among images the model classified correctly when noisy, transfer success on other
models, and the output's quality against the clean image (PSNR, SSIM, PSNR_L) and BRISQUE.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.attacks.base import Attack
from advkit.errors import UnknownNameError

PAPER_BASELINES = ("fgsm", "mifgsm", "dim", "tifgsm", "timifgsm", "tidim")
BASELINES = (*PAPER_BASELINES, "nifgsm", "sinifgsm", "vmifgsm", "vnifgsm")
METHODS = ("pasadena", "denoise", *BASELINES, *(f"denoise+{b}" for b in BASELINES))


def create_baseline(name: str, model: nn.Module, eps: float = 8 / 255, seed: int = 0, **kwargs: Any) -> Attack:
    """One of ``BASELINES``: Pasadena's six with SPEC settings (ε, 10 iterations, decay 1, DI 0.5, TI 15/σ 3),
    or NI-FGSM, SI-NI-FGSM (5 scales), VMI-FGSM, VNI-FGSM (20 neighbours at β = 1.5) with their
    papers' settings at the same ε and 10 iterations — each its registered class's defaults, with
    ``seed`` for the ones that draw (DIM's transforms, VT's neighbours)."""
    from advkit.attacks.registry import get_attack

    if name not in BASELINES:
        raise UnknownNameError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    cls = get_attack(name)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs["seed"] = seed
    return cls(model, eps=eps, **kwargs)


def noisy_inputs(clean: torch.Tensor, source_indices: np.ndarray, sigma: float, seed: int) -> torch.Tensor:
    """clip(clean + N(0, σ²)) quantized to 8 bits; each image's noise is seeded by (seed, source index)."""
    out = torch.empty_like(clean)
    for k, idx in enumerate(source_indices):
        digest = hashlib.blake2b(f"noise:{seed}:{int(idx)}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        noise = torch.randn(clean.shape[1:], generator=g).to(clean.device)
        out[k] = (clean[k] + sigma * noise).clamp(0, 1)
    return out.mul(255).round().div(255)


@torch.no_grad()
def image_quality(outputs: torch.Tensor, clean: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image PSNR, SSIM, PSNR_L against the clean image, and BRISQUE of the output."""
    from advkit.metrics import brisque, psnr, psnr_local, ssim

    with np.errstate(all="ignore"):
        scores = brisque(outputs.float().cpu())
    return {
        "psnr": psnr(outputs, clean).clamp(max=100).cpu().numpy(),
        "ssim": ssim(outputs, clean).cpu().numpy(),
        "psnr_l": psnr_local(outputs, clean).cpu().numpy(),
        "brisque": scores.cpu().numpy(),
    }


def run_method(
    method: str,
    noisy: torch.Tensor,
    model: nn.Module,
    *,
    kpn: nn.Module | None,
    pasadena: Attack | None = None,
    eps: float = 8 / 255,
    seed: int = 0,
) -> torch.Tensor:
    """The output images of ``method`` for a batch of noisy inputs (labels: the model's predictions)."""
    with torch.no_grad():
        labels = model(noisy).argmax(1)
    if method == "pasadena":
        if pasadena is None:
            raise ValueError("method 'pasadena' needs a Pasadena attack")
        return pasadena(noisy, labels)
    if method == "denoise" or method.startswith("denoise+"):
        if kpn is None:
            raise ValueError(f"method {method!r} needs a KPN denoiser")
        with torch.no_grad():
            denoised = kpn(noisy).clamp(0, 1)
        if method == "denoise":
            return denoised
        return create_baseline(method.split("+", 1)[1], model, eps=eps, seed=seed)(denoised, labels)
    return create_baseline(method, model, eps=eps, seed=seed)(noisy, labels)


@torch.no_grad()
def summarize(
    outputs: torch.Tensor,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    labels: torch.Tensor,
    model: nn.Module,
    transfer: dict[str, nn.Module],
    batch_size: int = 250,
) -> dict[str, Any]:
    """Success, success among correct, transfer success per target, and mean quality metrics."""

    def predict(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])

    y_noisy = predict(model, noisy)
    y_out = predict(model, outputs)
    changed = y_out != y_noisy
    correct = (y_noisy == labels) & (labels >= 0)
    result: dict[str, Any] = {
        "n": len(outputs),
        "success": float(changed.float().mean()),
        "success_on_correct": float(changed[correct].float().mean()) if correct.any() else None,
        "accuracy_noisy": float(((y_noisy == labels) & (labels >= 0)).float().mean()),
        "accuracy_output": float(((y_out == labels) & (labels >= 0)).float().mean()),
        "transfer": {},
    }
    for name, target in transfer.items():
        t_noisy, t_out = predict(target, noisy), predict(target, outputs)
        result["transfer"][name] = float((t_noisy != t_out).float().mean())
    quality = {k: float(np.nanmean(v)) for k, v in image_quality(outputs, clean).items()}
    result.update(quality)
    return result


def quality_columns() -> Sequence[str]:
    return ("psnr", "ssim", "psnr_l", "brisque")

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from advkit.metrics import PSNR, psnr
from tests.metrics._images import nhwc_to_nchw


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_psnr_matches_skimage_per_image(cifar_pairs, dtype, tol):
    clean, noisy = cifar_pairs
    expected = np.array([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(clean, noisy)])
    got = psnr(nhwc_to_nchw(clean, dtype), nhwc_to_nchw(noisy, dtype))
    assert got.shape == (len(clean),) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=tol)


def test_psnr_data_range_255_matches_skimage(cifar_pairs):
    clean, noisy = cifar_pairs
    a, b = np.round(clean * 255), np.round(noisy * 255)
    expected = [peak_signal_noise_ratio(p, q, data_range=255) for p, q in zip(a, b)]
    got = psnr(nhwc_to_nchw(a), nhwc_to_nchw(b), data_range=255)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)


def test_identical_images_give_inf():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = x.clone()
    y[1, 0, 0, 0] = 0.5 if x[1, 0, 0, 0] != 0.5 else 0.25
    values = psnr(x, y)
    assert math.isinf(values[0].item()) and values[0] > 0
    assert math.isfinite(values[1].item())


def test_batch_consistency_reduction_and_module(cifar_pairs):
    clean, noisy = cifar_pairs
    x, y = nhwc_to_nchw(clean), nhwc_to_nchw(noisy)
    batched = psnr(x, y)
    one_by_one = torch.cat([psnr(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-12)
    torch.testing.assert_close(psnr(x, y, reduction="mean"), batched.mean())
    torch.testing.assert_close(PSNR(reduction="mean")(x, y), batched.mean())


def test_psnr_has_gradients():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    psnr(x, y, reduction="mean").backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()

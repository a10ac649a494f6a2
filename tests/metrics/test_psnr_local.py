from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advkit.metrics import PSNRLocal, psnr_local
from tests.metrics._images import nhwc_to_nchw


def psnr_local_loop(
    a: np.ndarray, b: np.ndarray, window: int, stride: int, data_range: float, max_db: float
) -> float:
    """Straightforward reference on one HWC pair: every window, its MSE over pixels and channels."""
    height, width = a.shape[:2]
    values = []
    for top in range(0, height - window + 1, stride):
        for left in range(0, width - window + 1, stride):
            diff = a[top : top + window, left : left + window] - b[top : top + window, left : left + window]
            mse = float(np.mean(diff**2))
            values.append(max_db if mse == 0 else min(max_db, 10 * math.log10(data_range**2 / mse)))
    return float(np.mean(values))


@pytest.mark.parametrize("window,stride", [(8, 1), (8, 3), (5, 2), (1, 1)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_matches_a_plain_loop(cifar_pairs, window, stride, dtype, tol):
    clean, noisy = cifar_pairs
    clean, noisy = clean[:4, :, :29], noisy[:4, :, :29]  # 32 × 29: windows do not tile exactly
    expected = [psnr_local_loop(a, b, window, stride, 1.0, 100.0) for a, b in zip(clean, noisy)]
    got = psnr_local(nhwc_to_nchw(clean, dtype), nhwc_to_nchw(noisy, dtype), window=window, stride=stride)
    assert got.shape == (4,) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=tol)


def test_equal_windows_are_capped_at_max_db(cifar_pairs):
    clean, _ = cifar_pairs
    a = clean[:2]
    b = a.copy()
    b[0, 10, 12, 1] = 1.0 - b[0, 10, 12, 1]  # one changed value: only the windows over it differ
    x, y = nhwc_to_nchw(a), nhwc_to_nchw(b)
    got = psnr_local(x, y)
    assert got[1].item() == pytest.approx(100.0, abs=1e-9)  # identical images: every window capped
    assert 60 < got[0].item() < 100
    np.testing.assert_allclose(got[0].item(), psnr_local_loop(a[0], b[0], 8, 1, 1.0, 100.0), atol=1e-9)
    # 64 of the 625 windows hold the changed value; each of the other 561 contributes the cap.
    changed_windows = (got[0].item() * 625 - 561 * 100.0) / 64
    change = abs(b[0, 10, 12, 1] - a[0, 10, 12, 1])
    assert changed_windows == pytest.approx(10 * math.log10(8 * 8 * 3 / change**2), abs=1e-8)
    np.testing.assert_allclose(psnr_local(x, y, max_db=80)[1].item(), 80.0)


def test_uint8_one_level_difference_stays_below_the_cap():
    x = torch.full((1, 3, 8, 8), 100 / 255, dtype=torch.float64)
    y = x.clone()
    y[0, 2, 7, 7] = 101 / 255
    value = psnr_local(x, y).item()
    assert value == pytest.approx(10 * math.log10(255**2 * 192), abs=1e-9)  # 70.9 dB < 100 dB


def test_gradients_are_finite_with_equal_windows():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    y = x.clone()
    y[..., :4, :4] = (y[..., :4, :4] + 0.1).clamp(0, 1)
    y.requires_grad_(True)
    psnr_local(x, y, reduction="mean").backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_batch_consistency_and_module(cifar_pairs):
    clean, noisy = cifar_pairs
    x, y = nhwc_to_nchw(clean), nhwc_to_nchw(noisy)
    batched = psnr_local(x, y)
    one_by_one = torch.cat([psnr_local(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-10)
    torch.testing.assert_close(PSNRLocal(reduction="mean")(x, y), batched.mean())
    torch.testing.assert_close(PSNRLocal(window=4, stride=2)(x, y), psnr_local(x, y, window=4, stride=2))

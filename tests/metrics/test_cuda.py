"""The metrics on a GPU give the CPU's numbers (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from advkit.metrics import brisque, psnr, psnr_local, ssim
from tests.metrics._images import nhwc_to_nchw


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metrics_on_cuda_match_cpu(cifar_pairs, dtype):
    clean, noisy = cifar_pairs
    x, y = nhwc_to_nchw(clean, dtype), nhwc_to_nchw(noisy, dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for metric in (psnr, ssim, psnr_local):
        torch.testing.assert_close(metric(x.cuda(), y.cuda()).cpu(), metric(x, y), **tol)
    torch.testing.assert_close(brisque(y.cuda()).cpu(), brisque(y), rtol=1e-6, atol=1e-4)

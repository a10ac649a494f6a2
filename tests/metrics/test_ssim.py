from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from advkit.metrics import SSIM, ssim
from advkit.metrics.ssim import window_size
from tests.metrics._images import nhwc_to_nchw, photo_uint8, with_noise_uint8

SKIMAGE_SETTINGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The reference: scikit-image on one HWC (or HW) float image pair, SPEC settings."""
    channel_axis = -1 if a.ndim == 3 else None
    return float(structural_similarity(a, b, channel_axis=channel_axis, **SKIMAGE_SETTINGS))


def test_window_is_11_taps_as_scipy_derives_it():
    # scikit-image: truncate = 3.5 and radius int(3.5 * 1.5 + 0.5) = 5.
    assert window_size() == 11


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_ssim_matches_skimage_on_cifar(cifar_pairs, dtype, tol):
    clean, noisy = cifar_pairs
    expected = np.array([skimage_ssim(a, b) for a, b in zip(clean, noisy)])
    got = ssim(nhwc_to_nchw(clean, dtype), nhwc_to_nchw(noisy, dtype))
    assert got.shape == (len(clean),) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=tol)
    assert expected.std() > 0.05  # the pairs span a real range of SSIM values


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_ssim_matches_skimage_on_a_photo_with_noise(name):
    clean = photo_uint8(name) / 255.0  # 512 × 512, RGB and grey
    noisy = with_noise_uint8(photo_uint8(name), 0.05, seed=3) / 255.0
    expected = skimage_ssim(clean, noisy)

    def to_t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)[None, None] if a.ndim == 2 else nhwc_to_nchw(a[None])

    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        got = ssim(to_t(clean).to(dtype), to_t(noisy).to(dtype)).item()
        assert abs(got - expected) < tol, (dtype, got, expected)


def test_ssim_odd_sizes_and_data_range(cifar_pairs):
    clean, noisy = cifar_pairs
    a, b = clean[:3, 3:30, 1:14] * 255, noisy[:3, 3:30, 1:14] * 255  # 27 × 13
    expected = [
        structural_similarity(
            p, q, channel_axis=-1, gaussian_weights=True, use_sample_covariance=False, data_range=255
        )
        for p, q in zip(a, b)
    ]
    got = ssim(nhwc_to_nchw(a), nhwc_to_nchw(b), data_range=255)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)


def test_identical_images_score_one_and_batch_is_consistent(cifar_pairs):
    clean, noisy = cifar_pairs
    x, y = nhwc_to_nchw(clean), nhwc_to_nchw(noisy)
    torch.testing.assert_close(ssim(x, x), torch.ones(len(x), dtype=x.dtype))
    batched = ssim(x, y)
    one_by_one = torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-12)
    torch.testing.assert_close(SSIM(reduction="mean")(x, y), batched.mean())
    torch.testing.assert_close(ssim(y, x), batched)  # symmetric


def test_ssim_is_differentiable_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 12, 13, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.rand(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ssim(x, t), (y,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_ssim_as_a_loss_improves_a_noisy_image(cifar_pairs):
    clean, noisy = cifar_pairs
    x = nhwc_to_nchw(clean[:4], torch.float32)
    y = nhwc_to_nchw(noisy[:4], torch.float32).requires_grad_(True)
    before = ssim(x, y).detach()
    optimizer = torch.optim.Adam([y], lr=0.01)
    for _ in range(10):
        optimizer.zero_grad()
        loss = 1 - ssim(x, y.clamp(0, 1), reduction="mean")
        loss.backward()
        optimizer.step()
    after = ssim(x, y.detach().clamp(0, 1))
    assert (after > before + 0.05).all()

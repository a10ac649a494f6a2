"""Input validation shared by every metric: clear `ValueError`s that name the shapes and ranges."""

from __future__ import annotations

import pytest
import torch

from advkit.metrics import BRISQUE, PSNR, SSIM, PSNRLocal, brisque, psnr, psnr_local, ssim

PAIR_METRICS = [psnr, ssim, psnr_local]


def _images(*shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_rank_must_be_4(metric):
    x = _images(3, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(3, 16, 16\)"):
        metric(x, x)


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_shapes_must_match(metric):
    with pytest.raises(ValueError, match=r"same shape.*\(1, 3, 16, 16\).*\(1, 3, 16, 17\)"):
        metric(_images(1, 3, 16, 16), _images(1, 3, 16, 17))


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_dtypes_must_match(metric):
    with pytest.raises(ValueError, match="same dtype"):
        metric(_images(1, 3, 16, 16), _images(1, 3, 16, 16, dtype=torch.float64))


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_integer_images_are_refused(metric):
    x = (_images(1, 3, 16, 16) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="float tensor"):
        metric(x, x)


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_values_outside_the_data_range_are_refused(metric):
    x = _images(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\].*254\.\d+\].*data_range"):
        metric(x * 255, x)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        metric(x, x - 0.5)
    # The same values are fine once data_range says so.
    assert torch.isfinite(metric(x * 255, (x * 255).flip(-1), data_range=255)).all()


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_nan_is_refused(metric):
    x = _images(1, 3, 16, 16)
    y = x.clone()
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric(x, y)


@pytest.mark.parametrize("metric", [*PAIR_METRICS, lambda x, y, reduction: brisque(x, reduction=reduction)])
def test_unknown_reduction(metric):
    x = _images(1, 3, 16, 16)
    with pytest.raises(ValueError, match="reduction"):
        metric(x, x, reduction="sum")


@pytest.mark.parametrize("module", [PSNR, SSIM, PSNRLocal, BRISQUE])
def test_modules_refuse_unknown_reduction(module):
    with pytest.raises(ValueError, match="reduction"):
        module(reduction="sum")


def test_non_positive_data_range():
    x = _images(1, 3, 16, 16)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)


def test_ssim_needs_the_whole_window():
    x = _images(2, 3, 10, 32)
    with pytest.raises(ValueError, match=r"at least 11×11.*\(2, 3, 10, 32\)"):
        ssim(x, x)


def test_psnr_local_window_and_stride():
    x = _images(1, 3, 6, 16)
    with pytest.raises(ValueError, match=r"at least 8×8.*\(1, 3, 6, 16\)"):
        psnr_local(x, x)
    y = _images(1, 3, 16, 16)
    with pytest.raises(ValueError, match="window and stride"):
        psnr_local(y, y, stride=0)
    with pytest.raises(ValueError, match="max_db"):
        psnr_local(y, y, max_db=float("inf"))


def test_brisque_input_checks():
    with pytest.raises(ValueError, match=r"1 \(grey\) or 3 \(RGB\) channels.*\(1, 2, 16, 16\)"):
        brisque(_images(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        brisque(_images(3, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brisque(_images(1, 3, 16, 16) * 255)

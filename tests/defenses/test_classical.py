from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.defenses import create_defense, gradient_kind, is_randomized, parse_defense_spec
from advkit.errors import UsageError
from advkit.defenses.jpeg_approx import differentiable_jpeg, quantization_table, soft_round


@pytest.fixture(scope="module")
def cifar_200(cifar_test_npz):
    with np.load(cifar_test_npz) as z:
        return torch.from_numpy(z["x"][:200]).permute(0, 3, 1, 2).float().div(255)


# ---- median smoothing -------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 5])
def test_smoothing_equals_art(cifar_200, window):
    from art.defences.preprocessor import SpatialSmoothing

    art = SpatialSmoothing(window_size=window, channels_first=True, clip_values=(0.0, 1.0))
    for x in (cifar_200[:50], torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(0))):
        expected, _ = art(x.numpy())
        assert torch.equal(create_defense("smoothing", window_size=window)(x), torch.from_numpy(expected))


def test_smoothing_gradient_goes_to_each_windows_median():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    d = create_defense("smoothing")
    assert gradient_kind(d) == "exact"
    out = d(x)
    out.backward(torch.ones_like(out))
    # each output pixel sends its unit gradient to exactly one input pixel, its window's median
    assert x.grad.sum().item() == out.numel() and (x.grad >= 0).all()
    picked = (x.grad > 0).flatten(2)
    values = x.detach().flatten(2)
    assert all(set(values[b, c][picked[b, c]].tolist()) <= set(out.detach()[b, c].flatten().tolist())
               for b in range(2) for c in range(3))


def test_smoothing_rejects_bad_windows_and_shapes():
    with pytest.raises(ValueError, match="odd"):
        create_defense("smoothing", window_size=4)
    with pytest.raises(ValueError, match="at least"):
        create_defense("smoothing", window_size=9)(torch.rand(1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        create_defense("smoothing")(torch.rand(3, 8, 8))


# ---- JPEG ----------------------------------------------------------------------------------------


def test_jpeg_is_pillows_jpeg_of_the_rounded_8bit_image(cifar_200):
    import io

    from PIL import Image

    x = (cifar_200[:20] + 0.3 / 255).clamp(0, 1)  # off the 8-bit levels, so rounding matters
    out = create_defense("jpeg")(x)
    levels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for image, got in zip(levels, out):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="jpeg", quality=75)
        expected = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float() / 255
        assert torch.equal(got, expected)


def test_jpeg_truncate_is_arts_own_conversion(cifar_200):
    from art.defences.preprocessor import JpegCompression

    x = (cifar_200[:20] - 0.3 / 255).clamp(0, 1)
    expected, _ = JpegCompression(clip_values=(0.0, 1.0), quality=75, channels_first=True)(x.numpy())
    assert torch.equal(create_defense("jpeg", rounding="truncate")(x), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="rounding"):
        create_defense("jpeg", rounding="up")


def test_jpeg_ignores_perturbations_below_half_an_8bit_level_unless_truncating(cifar_200):
    x = cifar_200[:50]
    down = (x - 1e-4).clamp(0, 1)
    rounded = create_defense("jpeg")
    assert torch.equal(rounded(down), rounded(x)) and torch.equal(rounded((x + 0.49 / 255).clamp(0, 1)), rounded(x))
    truncated = create_defense("jpeg", rounding="truncate")
    assert not torch.equal(truncated(down), truncated(x))  # −1e-4 drops every nonzero pixel a level


# ---- the differentiable JPEG approximation ----------------------------------------------------


def test_quantization_tables_follow_libjpeg_scaling():
    assert quantization_table(50)[0, 0] == 16 and quantization_table(50, chroma=True)[7, 7] == 99
    assert quantization_table(75)[0, 0] == 8  # (16 * 50 + 50) // 100
    assert quantization_table(10)[0, 0] == 80  # scale 500
    assert quantization_table(100).max() == 1 and quantization_table(1).max() == 255
    with pytest.raises(ValueError, match="1..100"):
        quantization_table(0)


def test_soft_round_is_near_round_with_a_gradient():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
    y = soft_round(x)
    assert (y - torch.round(x)).abs().max() <= 0.125 + 1e-12
    y.sum().backward()
    assert (x.grad > 0).float().mean() > 0.95


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_differentiable_jpeg_is_near_pillows_jpeg(cifar_200, quality):
    """Within 1.5/255 of ART's (Pillow's) JPEG on average and at most half as far as the identity
    (quality 75: 1.2/255 against 5.0/255; at 95 both shrink to the 8-bit rounding's level)."""
    real = create_defense("jpeg", quality=quality)(cifar_200)
    approx = differentiable_jpeg(cifar_200, quality)
    error = (approx - real).abs().mean().item() * 255
    identity = (cifar_200 - real).abs().mean().item() * 255
    assert error < 1.5 and error < identity / 2, (error, identity)


def test_differentiable_jpeg_shapes_dtypes_and_gradients():
    x = torch.rand(2, 3, 21, 13, dtype=torch.float64)
    y = differentiable_jpeg(x)
    assert y.shape == x.shape and y.dtype == torch.float64 and 0 <= y.min() and y.max() <= 1
    small = (0.3 + 0.4 * torch.rand(1, 3, 16, 16, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(differentiable_jpeg, (small,), fast_mode=True)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        differentiable_jpeg(torch.rand(1, 1, 8, 8))


def test_jpeg_bpda_backward_is_the_approximations_gradient():
    d = create_defense("jpeg")
    assert gradient_kind(d) == "BPDA (JPEG approx.)"
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    g = torch.randn(2, 3, 32, 32)
    d(x).backward(g)
    xx = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(differentiable_jpeg(xx), xx, g)
    assert torch.allclose(x.grad, expected)


def test_pgd_through_the_approximation_beats_the_identity(cifar_first_100, weights_dir):
    """The point of the stand-in: PGD through JPEG leaves fewer images correct than with BPDA's identity."""
    from advkit.attacks import PGD
    from advkit.defenses import DefendedClassifier
    from advkit.defenses.classical import JPEGDefense
    from advkit.models import create_classifier

    class IdentityBPDAJPEG(JPEGDefense):
        gradient = "BPDA"
        stand_in = None

    x, y = cifar_first_100
    x, y = x[:50], y[:50]
    model = create_classifier("resnet20").eval()
    accuracy = {}
    for name, jpeg in (("identity", IdentityBPDAJPEG()), ("approx", JPEGDefense())):
        pipeline = DefendedClassifier(jpeg, model).eval()
        adv = PGD(pipeline, eps=1e-2, steps=10, seed=0)(x, y)
        with torch.no_grad():
            accuracy[name] = (pipeline(adv).argmax(1) == y).float().mean().item()
    assert accuracy["approx"] <= accuracy["identity"] - 0.15, accuracy


def test_bitdepth_ignores_perturbations_below_half_an_8bit_level(cifar_200):
    """4-bit squeezing of 8-bit images: its thresholds (k + 1/2)/15 lie at least 0.5/255 from every
    multiple of 1/255, so no L∞ perturbation below 0.5/255 changes its output — its adaptive row
    equals its clean accuracy at radii up to 1e-3 by construction, not by gradient masking."""
    d = create_defense("bitdepth")
    generator = torch.Generator().manual_seed(0)
    clean = d(cifar_200)
    for radius in (1e-4, 1e-3, 0.49 / 255):
        delta = (torch.rand(cifar_200.shape, generator=generator) * 2 - 1) * radius
        corners = torch.sign(delta) * radius  # the L∞ ball's vertices, where PGD ends up
        for x in (cifar_200 + delta, cifar_200 + corners):
            assert torch.equal(d(x.clamp(0, 1)), clean)
    assert not torch.equal(d((cifar_200 + 0.51 / 255).clamp(0, 1)), clean)


# ---- name:key=value specs ----------------------------------------------------------------------


def test_defense_specs_configure_the_classical_defenses():
    assert parse_defense_spec("tvm:prob=0.9:lamb=0.1") == ("tvm", {"prob": 0.9, "lamb": 0.1})
    assert create_defense("tvm:prob=0.9:lamb=0.1").config == {
        "name": "tvm", "prob": 0.9, "lamb": 0.1, "max_iter": 10, "seed": 0, "backward": "solver"}
    assert create_defense("jpeg:quality=50:rounding=truncate").config["quality"] == 50
    assert create_defense("bitdepth:bit_depth=5").config["bit_depth"] == 5
    # keyword arguments win over the spec; a path with a colon is not a spec
    assert create_defense("jpeg:quality=50", quality=90).config["quality"] == 90
    assert parse_defense_spec("runs/filt:v2") == ("runs/filt:v2", {})
    assert parse_defense_spec("gaussian:sigma=0.03:seed=none") == ("gaussian", {"sigma": 0.03, "seed": None})
    for spec, needle in (("tvm:lam=0.1", "no option 'lam'"), ("jpeg:quality", "key=value"), ("jpeg:", "key=value")):
        with pytest.raises(UsageError, match=needle):
            create_defense(spec)


# ---- Gaussian noise (randomized) -------------------------------------------------------------


def test_gaussian_noise_matches_arts_gaussian_augmentation(cifar_200):
    """Same law as ART's ``GaussianAugmentation(augmentation=False)`` with clipping: the noise's
    spread on unclipped pixels and the share of clipped pixels agree within 2 %."""
    from art.defences.preprocessor import GaussianAugmentation

    sigma = 0.05
    art = GaussianAugmentation(sigma=sigma, augmentation=False, clip_values=(0.0, 1.0), apply_predict=True)
    np.random.seed(0)
    theirs = torch.from_numpy(art(cifar_200.numpy())[0])
    torch.manual_seed(0)
    ours = create_defense(f"gaussian:sigma={sigma}")(cifar_200)
    for out in (ours, theirs):
        assert out.min() >= 0 and out.max() <= 1
    inner = (cifar_200 > 4 * sigma) & (cifar_200 < 1 - 4 * sigma)
    spread = [(out - cifar_200)[inner].std().item() for out in (ours, theirs)]
    clipped = [((out == 0) | (out == 1)).float().mean().item() for out in (ours, theirs)]
    assert spread[0] == pytest.approx(sigma, rel=0.02) and spread[0] == pytest.approx(spread[1], rel=0.02)
    assert clipped[0] == pytest.approx(clipped[1], rel=0.02), clipped


def test_gaussian_noise_draws_fresh_noise_unless_seeded():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    random, fixed = create_defense("gaussian:sigma=0.1:seed=none"), create_defense("gaussian:sigma=0.1:seed=4")
    assert is_randomized(random) and not is_randomized(fixed)
    assert not torch.equal(random(x), random(x))
    assert torch.equal(fixed(x), fixed(x))
    torch.manual_seed(5)
    a = random(x)
    torch.manual_seed(5)
    assert torch.equal(random(x), a)
    # exactly differentiable: the clip's gradient, 1 inside [0, 1] and 0 where the noise went outside
    xr = x.clone().requires_grad_(True)
    out = fixed(xr)
    out.sum().backward()
    assert torch.equal(xr.grad, ((out > 0) & (out < 1)).float())
    assert gradient_kind(fixed) == "exact"
    with pytest.raises(ValueError, match="sigma"):
        create_defense("gaussian:sigma=2")

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from advkit.defenses import AdvFilter, DefendedClassifier, create_defense, is_differentiable
from advkit.errors import CheckpointError, UnknownNameError, UsageError
from advkit.models import create_classifier, create_denoiser, save_denoiser
from advkit.zoo import DEFAULT_DENOISER, list_denoisers


def test_default_is_shipped_and_loads_offline():
    assert DEFAULT_DENOISER in list_denoisers()
    f = AdvFilter()
    assert f.arch == "unet-filt"
    x = torch.rand(2, 3, 32, 32)
    y = f(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_shipped_checkpoints_within_size_budget():
    from advkit.zoo import zoo_file

    total = sum(zoo_file(name).stat().st_size for name in list_denoisers())
    assert total <= 25 * 2**20
    assert {"advfilter-cifar10-filt", "advfilter-cifar10-pafilt", "kpn-cifar10"} <= set(list_denoisers())


def test_default_keeps_clean_cifar_images(cifar_first_100):
    """PSNR of defend(clean) vs clean ≥ 30 dB on clean CIFAR test images (docs/zoo.md has the number)."""
    from advkit.metrics import psnr

    x, _ = cifar_first_100
    with torch.no_grad():
        out = AdvFilter()(x)
    assert psnr(out, x).clamp(max=100).mean() >= 30


def test_defended_classifier_is_differentiable_end_to_end(weights_dir):
    model = DefendedClassifier(AdvFilter(), create_classifier("resnet20"))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tiled_denoising_matches_whole_image():
    torch.manual_seed(0)
    model = create_denoiser("unet-filt", width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    f = AdvFilter(model)
    image = torch.rand(1, 3, 150, 170)
    whole = f(image)
    tiled = f.denoise_large(image, tile=64, overlap=32)["out"]
    assert tiled.shape == whole.shape
    # tiles see at least 32 px of context; the U-Net's receptive field is larger, so allow a little
    assert (tiled - whole).abs().mean() < 2e-3


def test_head_only_for_multihead(tmp_path):
    path = save_denoiser(create_denoiser("unet-filt-multihead", width=4), tmp_path / "mh")
    assert AdvFilter(path, head=2).denoiser.default_head == 2
    with pytest.raises(UsageError, match="multi-head"):
        AdvFilter(head=1)


def test_unknown_names_and_bad_paths(tmp_path):
    with pytest.raises(UnknownNameError, match="advfilter-cifar10-filt"):
        AdvFilter("no-such-denoiser")
    with pytest.raises(CheckpointError):
        AdvFilter(str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("name", ["jpeg", "smoothing", "bitdepth", "tvm", "gaussian", "none", "advfilter", "pafilt"])
def test_create_defense_shares_one_interface(name):
    d = create_defense(name)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = d(x)
        # the input's dtype comes back (a learned denoiser computes in its weights' float32),
        # and an empty batch is no error
        y64 = d(x.double())
        assert d(x[:0]).shape == (0, 3, 32, 32)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert y64.dtype == torch.float64
    if name not in ("gaussian", "tvm"):  # (random draws)
        torch.testing.assert_close(y64.float(), y, atol=1e-5, rtol=0)
    assert is_differentiable(d) == (name not in ("jpeg", "bitdepth", "tvm"))
    if name != "none":  # images on the wrong scale are refused, not clamped into nonsense
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*divide by 255"):
            d(x * 255)


def test_bpda_gradient_is_identity():
    d = create_defense("bitdepth")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    g = torch.randn(1, 3, 32, 32)
    d(x).backward(g)
    assert torch.equal(x.grad, g)


def test_bitdepth_quantizes():
    out = create_defense("bitdepth", bit_depth=1)(torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_art_preprocessor_matches_our_pipeline(cifar_first_100, weights_dir):
    """ART PyTorchClassifier + our preprocessor gives our pipeline's defended accuracy; ART's PGD runs through it."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from advkit.attacks import PGD
    from advkit.defenses.art_adapter import AdvFilterPreprocessor

    x, y = cifar_first_100
    x, y = x[:40], y[:40]
    classifier = create_classifier("resnet20")
    advfilter = AdvFilter()
    adv = PGD(classifier, eps=8 / 255, steps=10, seed=0)(x, y)
    with torch.no_grad():
        ours = (classifier(advfilter(adv)).argmax(1) == y).float().mean().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art_clf = PyTorchClassifier(
            model=classifier, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
            clip_values=(0.0, 1.0), preprocessing_defences=[AdvFilterPreprocessor(advfilter, device_type="cpu")],
            device_type="cpu",
        )
        art_acc = float((art_clf.predict(adv.numpy()).argmax(1) == y.numpy()).mean())
        assert round(art_acc * len(y)) == round(ours * len(y))  # the same images classified correctly
        attack = ProjectedGradientDescent(art_clf, norm=np.inf, eps=8 / 255, eps_step=2 / 255, max_iter=5,
                                          batch_size=40, verbose=False)
        x_adaptive = attack.generate(x[:8].numpy(), y=y[:8].numpy())
    assert np.abs(x_adaptive - x[:8].numpy()).max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        adaptive_acc = (classifier(advfilter(torch.from_numpy(x_adaptive))).argmax(1) == y[:8]).float().mean()
    clean_acc = (classifier(advfilter(x[:8])).argmax(1) == y[:8]).float().mean()
    assert adaptive_acc < clean_acc  # the gradient flows through the filter: the adaptive attack bites


def test_tiles_of_the_shipped_filt_match_the_whole_image_closely():
    """The default overlap (96 px) keeps the seams of a tiled photo within 4/255 of the untiled
    output (measured 2.7/255 here with 128-px tiles; the former 32 px left 10/255 at the seams)."""
    import skimage.data
    import torch.nn.functional as F

    f = AdvFilter()
    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    photo = F.interpolate(photo, size=(300, 420), mode="bilinear", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        whole = f(photo)
        tiled = f.denoise_large(photo, tile=128)["out"]
    diff = (tiled - whole).abs()
    assert diff.max() <= 4 / 255 and diff.mean() <= 0.1 / 255, (diff.max() * 255, diff.mean() * 255)

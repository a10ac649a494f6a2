"""Pasadena's transfer baselines (MI-FGSM, DIM, TI-FGSM, TI-MI-FGSM, TI-DIM, denoise-then-attack).

Unit tests on a tiny network, then a cross-check against torchattacks 3.5.1 on 100 CIFAR-10 test
images and resnet20. How our settings map to torchattacks' parameters:

- ``FGSM(eps)`` ↔ ``FGSM(eps)``.
- ``MIFGSM(eps)`` (10 steps, step eps/10, decay 1) ↔ ``MIFGSM(eps, alpha=eps/10, steps=10, decay=1.0)``.
- ``DIM(eps, seed=s)`` ↔ ``DIFGSM(eps, alpha=eps/10, steps=10, decay=1.0, resize_rate=0.9,
  diversity_prob=0.5)`` after ``torch.manual_seed(s)``: torchattacks' DIFGSM defaults to decay 0
  (DI²-FGSM); our DIM is the momentum version (M-DI²-FGSM). Our transform draws the same four
  numbers per step in the same order from a generator seeded with ``s``, so on square images the
  two pick the same transforms.
- TI kernels: torchattacks' ``nsig`` is the half-width of the kernel in standard deviations, our
  ``sigma`` the standard deviation in pixels: ``sigma = (15 − 1) / (2·nsig)``. Our default σ = 3
  (SPEC) is ``nsig = 7/3``; torchattacks' default ``nsig = 3`` is σ = 7/3.
- ``TIFGSM(eps)`` ↔ ``TIFGSM(eps, alpha=eps, steps=1, decay=0, diversity_prob=0, nsig=7/3)``.
- ``TIMIFGSM(eps)`` ↔ ``TIFGSM(eps, alpha=eps/10, steps=10, decay=1.0, diversity_prob=0, nsig=7/3)``.
- ``TIDIM(eps, seed=s)`` ↔ ``TIFGSM(eps, alpha=eps/10, steps=10, decay=1.0, resize_rate=0.9,
  diversity_prob=0.5, nsig=7/3)`` after ``torch.manual_seed(s)``.

Remaining differences: torchattacks averages the cross-entropy over the batch (we sum it; the
per-image gradient normalization removes the scale) and computes eps/10 as a Python float. The
adversarial images agree pixel for pixel up to rare float-rounding flips, so besides the required
"success rate within 2 points" the cross-check asserts that ≥ 99% of the pixels agree. Success is
"prediction changed from the clean prediction" (Pasadena's measure; the attacks use the clean
predictions as labels).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from advkit.attacks import DIM, FGSM, MIFGSM, TIDIM, TIFGSM, TIMIFGSM, DenoiseThenAttack
from advkit.attacks.mifgsm import normalize_mean_abs
from advkit.attacks.transforms import DiverseInput, GradientSmoothing, diverse_input, gaussian_kernel2d, smooth_gradient
from advkit.models.denoisers import create_denoiser

ITERATIVE = (MIFGSM, DIM, TIMIFGSM, TIDIM)
ALL = (*ITERATIVE, TIFGSM)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small convolutions: on a busy 2-core machine a second thread made resnet20's backward ~4× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    return TinyNet().eval()


def _images(b=6, h=12, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 0.5 + 0.25


# ---------------------------------------------------------------- the TI kernel and the DI transform


def test_gaussian_kernel_is_normalized_symmetric_and_peaked():
    k = gaussian_kernel2d(15, 3.0)
    assert k.shape == (15, 15) and k.dtype == torch.float32
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.flip(1))
    assert k.argmax().item() == 7 * 15 + 7
    # σ = 3 px: one pixel off centre the weight drops by exp(−1/18)
    assert (k[7, 8] / k[7, 7]).item() == pytest.approx(torch.exp(torch.tensor(-1 / 18)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel2d(14, 3.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel2d(15, 0.0)


@pytest.mark.parametrize(("sigma", "nsig"), [(3.0, 7 / 3), (7 / 3, 3.0)], ids=["sigma3", "nsig3"])
def test_gaussian_kernel_equals_torchattacks_with_nsig_mapping(tiny, sigma, nsig):
    """torchattacks builds the kernel from scipy's normal pdf on linspace(−nsig, nsig, 15)."""
    torchattacks = pytest.importorskip("torchattacks")
    theirs = torchattacks.TIFGSM(tiny, len_kernel=15, nsig=nsig).stacked_kernel
    assert theirs.shape == (3, 1, 15, 15)
    torch.testing.assert_close(gaussian_kernel2d(15, sigma), theirs[0, 0], atol=1e-8, rtol=1e-6)


def test_smooth_gradient_is_a_same_size_depthwise_convolution():
    k = gaussian_kernel2d(5, 1.0)
    impulse = torch.zeros(2, 3, 9, 11)
    impulse[1, 2, 4, 5] = 1.0
    out = smooth_gradient(impulse, k)
    assert out.shape == impulse.shape
    torch.testing.assert_close(out[1, 2, 2:7, 3:8], k)
    assert out[0].abs().sum() == 0 and out[1, :2].abs().sum() == 0
    # zero padding: mass near the border is lost, not reflected
    edge = torch.zeros(1, 1, 9, 9)
    edge[0, 0, 0, 0] = 1.0
    assert smooth_gradient(edge, k).sum().item() < 1.0
    with pytest.raises(ValueError, match=r"\(K, K\)"):
        smooth_gradient(impulse, torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        smooth_gradient(impulse[0], k)
    assert GradientSmoothing(15, 3.0)(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 24, 40), (1, 1, 9, 9), (1, 3, 2, 2)])
@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_diverse_input_keeps_the_shape(shape, rate):
    x = torch.rand(shape)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        assert diverse_input(x, rate, prob=1.0, generator=g).shape == x.shape


def test_diverse_input_shrinks_pads_and_is_differentiable():
    x = torch.rand(2, 3, 32, 32) * 0.5 + 0.5  # no zero pixels of its own
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        xr = x.clone().requires_grad_(True)
        out = diverse_input(xr, 0.9, prob=1.0, generator=g)
        zero_rows = (out[0].abs().sum((0, 2)) == 0).sum().item()
        zero_cols = (out[0].abs().sum((0, 1)) == 0).sum().item()
        # new size in [28, 32): 1 to 4 padded rows and as many padded columns
        assert 1 <= zero_rows <= 4 and zero_cols == zero_rows
        out.sum().backward()
        assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert diverse_input(x, 0.9, prob=0.0, generator=g) is x


def test_diverse_input_draws_like_torchattacks(tiny):
    """Same generator state → the same transform as torchattacks' DIFGSM.input_diversity."""
    torchattacks = pytest.importorskip("torchattacks")
    ta = torchattacks.DIFGSM(tiny, resize_rate=0.9, diversity_prob=0.5)
    x = torch.rand(2, 3, 32, 32)
    ours = DiverseInput(0.9, 0.5, seed=11)
    applied = 0
    with torch.random.fork_rng():
        torch.manual_seed(11)
        for _ in range(12):
            expected = ta.input_diversity(x)
            got = ours(x)
            applied += expected is not x
            torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert 0 < applied < 12  # both branches were exercised


def test_normalize_mean_abs_per_sample_and_zero_safe():
    g = torch.stack([torch.full((3, 4, 4), -2.0), torch.zeros(3, 4, 4)])
    out = normalize_mean_abs(g)
    assert torch.equal(out[0], torch.full((3, 4, 4), -1.0))
    assert torch.equal(out[1], torch.zeros(3, 4, 4))


# ---------------------------------------------------------------- the attacks on a tiny network


@pytest.mark.parametrize("cls", ALL)
def test_stays_in_ball_and_range_with_per_sample_eps(tiny, cls):
    x = _images()
    y = torch.arange(6) % 4
    eps = torch.tensor([1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2])
    adv = cls(tiny)(x, y, eps=eps)
    linf = (adv - x).abs().amax((1, 2, 3))
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert torch.all(linf <= eps + 1e-7)
    assert adv.min() >= 0 and adv.max() <= 1
    # every sample moved on its own scale (at least one full step)
    steps = getattr(cls(tiny), "steps", 1)
    assert torch.all(linf >= eps / steps * 0.999)


@pytest.mark.parametrize("cls", ALL)
def test_per_sample_eps_equals_scalar_runs(tiny, cls):
    """Row i of a mixed-eps batch is row i of the same batch attacked at the scalar eps_i (same seed)."""
    x = _images(4)
    y = torch.tensor([0, 1, 2, 3])
    eps = torch.tensor([0.01, 0.03, 0.05, 0.1])
    mixed = cls(tiny)(x, y, eps=eps)
    for i, e in enumerate(eps.tolist()):
        alone = cls(tiny)(x, y, eps=e)
        torch.testing.assert_close(mixed[i], alone[i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [DIM, TIDIM])
def test_diverse_input_attacks_are_deterministic_given_seed(tiny, cls):
    x = _images(4, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    a = cls(tiny, eps=0.05, seed=5)(x, y)
    b = cls(tiny, eps=0.05, seed=5)(x, y)
    assert torch.equal(a, b)
    # the generator advances: a second call on the same attack draws new transforms
    attack = cls(tiny, eps=0.05, seed=5)
    first, second = attack(x, y), attack(x, y)
    assert torch.equal(first, a) and not torch.equal(first, second)
    assert not torch.equal(a, cls(tiny, eps=0.05, seed=6)(x, y))
    # with no diversity the seed is irrelevant and DIM is MI-FGSM
    no_di = cls(tiny, eps=0.05, diversity_prob=0.0, seed=1)(x, y)
    assert torch.equal(no_di, cls(tiny, eps=0.05, diversity_prob=0.0, seed=2)(x, y))
    reference = (MIFGSM if cls is DIM else TIMIFGSM)(tiny, eps=0.05)(x, y)
    assert torch.equal(no_di, reference)


def test_one_step_without_momentum_is_fgsm(tiny):
    x = _images(3)
    y = torch.tensor([0, 1, 2])
    fgsm = FGSM(tiny, eps=0.03)(x, y)
    mi = MIFGSM(tiny, eps=0.03, steps=1, decay=0.0)(x, y)
    torch.testing.assert_close(mi, fgsm, atol=1e-7, rtol=0)


def test_tifgsm_is_one_step_on_the_smoothed_gradient(tiny):
    x = _images(2, 16, 16)
    y = torch.tensor([0, 3])
    adv = TIFGSM(tiny, eps=0.02, kernel_size=5, sigma=1.0)(x, y)
    xg = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(tiny(xg), y, reduction="sum").backward()
    smoothed = smooth_gradient(xg.grad, gaussian_kernel2d(5, 1.0))
    torch.testing.assert_close(adv, (x + 0.02 * smoothed.sign()).clamp(0, 1))
    # smoothing changes the direction: not plain FGSM
    assert not torch.equal(adv, FGSM(tiny, eps=0.02)(x, y))


def test_momentum_accumulates(tiny):
    """With decay 1 the step follows the running sum of normalized gradients, not the last one."""
    x = _images(4)
    y = torch.tensor([0, 1, 2, 3])
    with_momentum = MIFGSM(tiny, eps=0.2, steps=6, decay=1.0)(x, y)
    without = MIFGSM(tiny, eps=0.2, steps=6, decay=0.0)(x, y)
    assert not torch.equal(with_momentum, without)


def test_labels_default_to_predictions_and_errors(tiny):
    x = _images(3)
    pred = tiny(x).argmax(1)
    torch.testing.assert_close(MIFGSM(tiny, eps=0.03, steps=2)(x), MIFGSM(tiny, eps=0.03, steps=2)(x, pred))
    with pytest.raises(ValueError, match="steps"):
        MIFGSM(tiny, steps=0)
    with pytest.raises(ValueError, match="decay"):
        MIFGSM(tiny, decay=-1.0)
    with pytest.raises(ValueError, match="resize_rate"):
        DIM(tiny, resize_rate=0.0)
    with pytest.raises(ValueError, match="prob"):
        TIDIM(tiny, diversity_prob=1.5)
    with pytest.raises(ValueError, match="odd"):
        TIMIFGSM(tiny, kernel_size=4)
    with pytest.raises(ValueError, match="eps must be a scalar or shape"):
        DIM(tiny)(x, pred, eps=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        TIFGSM(tiny)(x[0], pred[:1])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_and_channels_last(tiny, precision):
    x = _images(2, 16, 16)
    y = torch.tensor([0, 1])
    adv = TIDIM(tiny, eps=0.03, steps=2, precision=precision, channels_last=True)(x, y)
    assert adv.dtype == torch.float32 and (adv - x).abs().max() <= 0.03 + 1e-7


def test_configs_record_the_spec_settings(tiny):
    cfgs = {cls.name: cls(tiny).config() for cls in ALL}
    json.dumps(cfgs)
    for name in ("mifgsm", "dim", "timifgsm", "tidim"):
        c = cfgs[name]
        assert c["eps"] == pytest.approx(8 / 255) and c["steps"] == 10 and c["decay"] == 1.0
        assert c["step"] is None and c["targeted"] is False and c["loss"] == "cross_entropy"
    for name in ("dim", "tidim"):
        assert cfgs[name]["resize_rate"] == 0.9 and cfgs[name]["diversity_prob"] == 0.5 and cfgs[name]["seed"] == 0
    for name in ("tifgsm", "timifgsm", "tidim"):
        assert cfgs[name]["kernel_size"] == 15 and cfgs[name]["sigma"] == 3.0 and cfgs[name]["kernel"] == "gaussian"
    assert "steps" not in cfgs["tifgsm"]


# ---------------------------------------------------------------- denoise then attack


def test_denoise_then_attack_attacks_the_denoised_image(tiny):
    x = _images(4)
    pred = tiny(x).argmax(1)

    def blur(images):
        return smooth_gradient(images, gaussian_kernel2d(3, 1.0))

    eps = torch.tensor([0.01, 0.02, 0.03, 0.04])
    wrapped = DenoiseThenAttack(blur, MIFGSM(tiny, eps=0.03))
    adv = wrapped(x, eps=eps)
    denoised = blur(x).clamp(0, 1)
    torch.testing.assert_close(wrapped.denoise(x), denoised)
    # the same as attacking the denoised image with the labels predicted on the *input*
    torch.testing.assert_close(adv, MIFGSM(tiny, eps=0.03)(denoised, pred, eps=eps))
    assert torch.all((adv - denoised).abs().amax((1, 2, 3)) <= eps + 1e-7)
    assert (adv - x).abs().max() > 0.04  # the ball is around the denoised image, not the input
    cfg = wrapped.config()
    json.dumps(cfg)
    assert cfg["attack"]["name"] == "mifgsm" and cfg["denoiser"]["callable"].endswith("<locals>.blur")
    assert DenoiseThenAttack(nn.Identity(), MIFGSM(tiny)).config()["denoiser"] == {"callable": "Identity"}


def test_denoise_then_attack_with_a_kpn(tiny):
    kpn = create_denoiser("kpn", width=8).eval()
    x = _images(2, 16, 16)
    wrapped = DenoiseThenAttack(kpn, TIDIM(tiny, eps=0.03, steps=2, seed=0))
    adv = wrapped(x, torch.tensor([0, 1]))
    with torch.no_grad():
        denoised = kpn(x)
    assert (adv - denoised).abs().max() <= 0.03 + 1e-6
    cfg = wrapped.config()
    assert cfg["denoiser"]["arch"] == "kpn" and cfg["attack"]["name"] == "tidim"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no batch norm or dropout in the KPN: train mode is harmless
        DenoiseThenAttack(create_denoiser("kpn", width=8).train(), MIFGSM(tiny))
    with pytest.warns(UserWarning, match="training mode"):
        DenoiseThenAttack(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Dropout()), MIFGSM(tiny))


def test_denoise_then_attack_rejects_bad_denoisers(tiny):
    x = _images(2)
    with pytest.raises(ValueError, match="input's shape"):
        DenoiseThenAttack(lambda im: im[:, :, :-1], MIFGSM(tiny))(x)
    with pytest.raises(ValueError, match="input's shape"):
        DenoiseThenAttack(lambda im: im.numpy(), MIFGSM(tiny))(x)
    with pytest.raises(TypeError, match="callable"):
        DenoiseThenAttack("kpn", MIFGSM(tiny))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="advkit Attack"):
        DenoiseThenAttack(lambda im: im, tiny)  # type: ignore[arg-type]


# ---------------------------------------------------------------- cross-check with torchattacks


def _success(model, adv, pred):
    with torch.no_grad():
        return (model(adv).argmax(1) != pred).float().mean().item()


def _theirs(torchattacks, name, model, eps):
    alpha = eps / 10
    nsig = (15 - 1) / (2 * 3.0)  # our sigma = 3 px
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "mifgsm":
        return torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=10, decay=1.0)
    if name == "dim":
        return torchattacks.DIFGSM(model, eps=eps, alpha=alpha, steps=10, decay=1.0, resize_rate=0.9,
                                   diversity_prob=0.5)
    if name == "tifgsm":
        return torchattacks.TIFGSM(model, eps=eps, alpha=eps, steps=1, decay=0.0, len_kernel=15, nsig=nsig,
                                   diversity_prob=0.0)
    diversity = 0.5 if name == "tidim" else 0.0
    return torchattacks.TIFGSM(model, eps=eps, alpha=alpha, steps=10, decay=1.0, len_kernel=15, nsig=nsig,
                               resize_rate=0.9, diversity_prob=diversity)


OURS = {"fgsm": FGSM, "mifgsm": MIFGSM, "dim": DIM, "tifgsm": TIFGSM, "timifgsm": TIMIFGSM, "tidim": TIDIM}


# 8/255 is the SPEC setting; MI-FGSM and DIM reach ~100% there on CIFAR, so they are checked at
# 2/255 instead (measured: MI 0.91, DIM 0.87), where a weaker or stronger attack would show; the
# images agree pixel for pixel with torchattacks' either way. The TI variants are far from
# saturation at 8/255 already (TI-FGSM 0.44, TI-MI 0.62, TI-DIM 0.56).
CASES = [
    ("fgsm", 8 / 255), ("fgsm", 2 / 255),
    ("mifgsm", 2 / 255),
    ("dim", 2 / 255),
    ("tifgsm", 8 / 255), ("tifgsm", 2 / 255),
    ("timifgsm", 8 / 255),
    ("tidim", 8 / 255),
]


@pytest.mark.parametrize(("name", "eps"), CASES, ids=[f"{n}-{round(e * 255)}" for n, e in CASES])
def test_matches_torchattacks_on_cifar(cifar_setup, name, eps):
    """Same settings (and seed 0 for the diverse inputs) → the same white-box success within 2 points."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, pred = cifar_setup
    kwargs = {"seed": 0} if name in ("dim", "tidim") else {}
    ours = OURS[name](model, eps=eps, **kwargs)(x, pred)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = _theirs(torchattacks, name, model, eps)(x, pred)
    s_ours, s_theirs = _success(model, ours, pred), _success(model, theirs, pred)
    assert abs(s_ours - s_theirs) <= 0.02, (s_ours, s_theirs)
    if eps < 8 / 255:
        assert s_ours < 0.97  # not saturated, so a weaker or stronger attack would show
    assert (ours - x).abs().max() <= eps + 1e-6
    agree = ((ours - theirs).abs() <= 1e-6).float().mean().item()
    assert agree >= 0.99, agree


@pytest.mark.cuda
@pytest.mark.parametrize("cls", ALL)
def test_cuda_matches_cpu(tiny, cls):
    """On CUDA (strict fp32) the attacks give the CPU's images up to rare sign flips of tiny gradients."""
    x = _images(4, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    eps = torch.tensor([0.01, 0.02, 0.03, 0.05])
    cpu = cls(tiny, seed=3)(x, y, eps=eps) if cls in (DIM, TIDIM) else cls(tiny)(x, y, eps=eps)
    net = TinyNet().eval().cuda()
    attack = cls(net, seed=3) if cls in (DIM, TIDIM) else cls(net)
    gpu = attack(x.cuda(), y.cuda(), eps=eps.cuda())
    assert gpu.device.type == "cuda"
    assert torch.all((gpu - x.cuda()).abs().amax((1, 2, 3)) <= eps.cuda() + 1e-6)
    assert ((gpu.cpu() - cpu).abs() <= 1e-5).float().mean().item() >= 0.95

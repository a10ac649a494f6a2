from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advkit.attacks.edges import CannyEdges, SobelEdges, create_edge_model
from advkit.attacks.pasadena import Pasadena, add_gaussian_noise, gaussian_kernels
from advkit.models import create_classifier, create_denoiser
from advkit.ops import kernel_filter


@pytest.fixture(scope="module")
def setup(cifar_first_100, weights_dir):
    x, _ = cifar_first_100
    x = x[::10][:8]
    torch.manual_seed(0)
    kpn = create_denoiser("kpn", width=4).eval()
    with torch.no_grad():
        for p in kpn.parameters():
            p.add_(torch.randn_like(p) * 0.002)
    return create_classifier("resnet20"), kpn, add_gaussian_noise(x, 0.1, seed=0), x


def test_edges_are_in_unit_range_and_multi_scale(setup):
    _, _, noisy, _ = setup
    e = SobelEdges((0.5, 1.0, 2.0))(noisy)
    assert e.shape == (8, 3, 32, 32) and e.min() >= 0 and e.max() <= 1
    c = CannyEdges(sigma=1.0, width=5)(noisy)
    assert c.shape == (8, 1, 32, 32) and set(c.unique().tolist()) <= {0.0, 1.0}
    thin = CannyEdges(sigma=1.0, width=1)(noisy)
    assert c.sum() > thin.sum()  # dilation widens the edges
    with pytest.raises(ValueError, match="positive odd number, got 4"):
        CannyEdges(width=4)
    assert isinstance(create_edge_model("canny", width=3), CannyEdges)


@pytest.mark.parametrize("shape", [(3, 13, 17), (3, 5, 6), (3, 32, 32)])
def test_sobel_edges_equal_scikit_image(shape):
    """The torch edges equal skimage's sobel(gaussian(rgb2gray(x), σ, mode="reflect")) / max, also
    where the Gaussian's radius (8 at σ = 2) exceeds the image."""
    from skimage import color, filters

    torch.manual_seed(0)
    x = torch.rand(2, *shape)
    ours = SobelEdges((0.5, 1.0, 2.0))(x)
    for b in range(2):
        grey = color.rgb2gray(x[b].permute(1, 2, 0).numpy().astype(np.float64))
        for i, sigma in enumerate((0.5, 1.0, 2.0)):
            ref = filters.sobel(filters.gaussian(grey, sigma=sigma, mode="reflect"))
            np.testing.assert_allclose(ours[b, i].numpy(), ref / ref.max(), atol=1e-6)
    flat = SobelEdges()(torch.full((1, 3, 8, 8), 0.5))
    assert torch.equal(flat, torch.zeros_like(flat))  # no edges: zeros, not NaN


def test_gaussian_kernels_sum_to_one():
    k = gaussian_kernels(torch.rand(2, 3, 6, 7), 5, 1.0)
    assert k.shape == (2, 25, 6, 7)
    torch.testing.assert_close(k.sum(1), torch.ones(2, 6, 7))


@pytest.mark.parametrize("variant", ["advkit", "paper"])
def test_attack_contract(setup, variant):
    model, kpn, noisy, _ = setup
    r = Pasadena(model, kpn, variant=variant, steps=5).run(noisy)
    adv, flipped = r["adv"], r["flipped"]
    assert adv.shape == noisy.shape and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        pred = model(adv).argmax(1)
    # success is "prediction changed from the model's own prediction on the noisy input"
    assert torch.equal(flipped, pred != r["labels"])
    assert torch.all(r["steps"] <= 5) and torch.all(r["steps"] >= (1 if variant == "paper" else 0))
    # images that did not flip ran every step; flipped ones stopped at their first flip
    assert torch.all(r["steps"][~flipped] == 5)
    assert r["mask"].shape == (8, 1, 32, 32) and r["mask"].min() > 0 and r["mask"].max() < 1


def test_paper_variant_first_step_is_raw_gradient_ascent(setup):
    """One iteration of Algorithm 1 by hand: K^a = K^n + α∇K^a J, w = w0 + α∇w J."""
    model, kpn, noisy, _ = setup
    x = noisy[:1]
    attack = Pasadena(model, kpn, variant="paper", steps=1, lam=0.9, theta=0.45, alpha=0.1, seed=3)
    result = attack.run(x)
    k_n = kpn.kernels(x).detach()
    edges = attack.edges(x)
    g = torch.Generator().manual_seed(3)
    w0 = torch.rand(1, edges.shape[1], generator=g)
    w0 = w0 / w0.sum()
    y = model(x).argmax(1)
    ka = k_n.clone().requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    m = torch.sigmoid((w[:, :, None, None] * edges).sum(1, keepdim=True) - 0.45)
    out = kernel_filter(x, m * ka + (1 - m) * k_n, padding=kpn.padding)
    j = 0.9 * F.cross_entropy(model(out), y, reduction="sum") - 0.1 * (ka - k_n).pow(2).sum()
    gk, gw = torch.autograd.grad(j, [ka, w])
    ka1, w1 = k_n + 0.1 * gk, w0 + 0.1 * gw
    m1 = torch.sigmoid((w1[:, :, None, None] * edges).sum(1, keepdim=True) - 0.45)
    expected = kernel_filter(x, m1 * ka1 + (1 - m1) * k_n, padding=kpn.padding).clamp(0, 1)
    torch.testing.assert_close(result["adv"], expected, atol=1e-5, rtol=1e-4)


def test_batched_equals_one_at_a_time(setup):
    model, kpn, noisy, _ = setup
    attack = Pasadena(model, kpn, steps=6)
    batched = attack.run(noisy[:4])
    for i in range(4):
        single = attack.run(noisy[i : i + 1])
        assert torch.equal(single["flipped"], batched["flipped"][i : i + 1])
        torch.testing.assert_close(single["adv"], batched["adv"][i : i + 1], atol=1e-4, rtol=0)


def test_gaussian_ablation_and_noise(setup):
    model, _, noisy, x = setup
    r = Pasadena(model, "gaussian", edges=CannyEdges(width=3), steps=3).run(noisy)
    assert r["adv"].shape == noisy.shape
    n1 = add_gaussian_noise(x, 0.1, seed=1)
    assert torch.equal(n1, add_gaussian_noise(x, 0.1, seed=1)) and not torch.equal(n1, noisy)
    assert 0.07 < float((n1 - x).std()) < 0.11


def test_advkit_returns_the_denoised_image_where_denoising_already_flips(setup):
    """The flip is checked before the first update: such images get 0 steps and the plain KPN output."""
    model, kpn, noisy, _ = setup
    with torch.no_grad():
        denoised = kernel_filter(noisy, kpn.kernels(noisy), padding=kpn.padding).clamp(0, 1)
        pred = model(denoised).argmax(1)
    labels = pred.clone()
    labels[:4] = (pred[:4] + 1) % 10  # the denoised prediction differs from these labels: already flipped
    r = Pasadena(model, kpn, steps=3).run(noisy, labels)
    assert torch.all(r["flipped"][:4]) and torch.all(r["steps"][:4] == 0)
    torch.testing.assert_close(r["adv"][:4], denoised[:4], atol=0, rtol=0)
    assert torch.all(r["steps"][4:] >= 1)
    paper = Pasadena(model, kpn, variant="paper", steps=3).run(noisy, labels)
    assert torch.all(paper["steps"] >= 1)  # Algorithm 1 updates before it checks


def test_margin_loss_does_not_saturate(setup):
    model, kpn, _, _ = setup
    attack = Pasadena(model, kpn)
    logits = torch.tensor([[40.0, 0.0, -3.0], [1.0, 2.0, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 1])
    margin = attack.attack_loss(logits, labels)
    torch.testing.assert_close(margin.detach(), torch.tensor([-40.0, -1.0]))
    (g,) = torch.autograd.grad(margin[0], logits)
    assert g[0].abs().sum() == 2  # ∂/∂z_y = −1, ∂/∂z_best-other = +1, whatever the confidence
    ce = Pasadena(model, kpn, loss="ce").attack_loss(logits, labels)
    (g_ce,) = torch.autograd.grad(ce[0], logits)
    assert g_ce.abs().max() < 1e-15  # CE's gradient is gone at softmax probability 1 in fp32


def test_refine_finds_a_nearer_flipping_output_on_the_kernel_segment(setup):
    model, kpn, noisy, _ = setup
    coarse = Pasadena(model, kpn, steps=20, kernel_step=0.05, refine=0).run(noisy)
    fine = Pasadena(model, kpn, steps=20, kernel_step=0.05, refine=10).run(noisy)
    assert torch.equal(coarse["flipped"], fine["flipped"]) and coarse["flipped"].any()
    with torch.no_grad():
        assert torch.equal(model(fine["adv"]).argmax(1) != fine["labels"], fine["flipped"])
    denoised = fine["denoised"]
    attacked = fine["flipped"] & (fine["steps"] > 0)
    assert attacked.any()
    d_coarse = (coarse["adv"] - denoised)[attacked].flatten(1).norm(dim=1)
    d_fine = (fine["adv"] - denoised)[attacked].flatten(1).norm(dim=1)
    assert torch.all(d_fine <= d_coarse + 1e-6) and torch.any(d_fine < 0.9 * d_coarse)
    # off the clamp, the refined output is the denoised image moved a fraction s of the way
    i = int(attacked.nonzero()[0])
    delta, full = (fine["adv"][i] - denoised[i]), (coarse["adv"][i] - denoised[i])
    inside = (coarse["adv"][i] > 0.01) & (coarse["adv"][i] < 0.99) & (denoised[i] > 0.01) & (denoised[i] < 0.99)
    inside &= full.abs() > 1e-3
    ratio = delta[inside] / full[inside]
    assert 0 < float(ratio.mean()) <= 1 and float(ratio.std()) < 1e-3


def test_confidence_keeps_a_margin_past_the_flip(setup):
    model, kpn, noisy, _ = setup
    plain = Pasadena(model, kpn, steps=30, kernel_step=0.05).run(noisy)
    kappa = 3.0
    confident = Pasadena(model, kpn, steps=30, kernel_step=0.05, confidence=kappa).run(noisy)
    with torch.no_grad():
        margins = Pasadena.margin(model(confident["adv"]), confident["labels"])
    done = margins >= kappa
    assert done.any()
    # an image done with κ is also flipped, and it moved at least as far from the denoised image
    assert torch.all(confident["flipped"][done])
    d = lambda r: (r["adv"] - r["denoised"]).flatten(1).norm(dim=1)  # noqa: E731
    both = done & plain["flipped"]
    assert torch.all(d(confident)[both] >= d(plain)[both] - 1e-6)


def test_diversity_attacks_a_transformed_view_but_judges_the_plain_image(setup):
    model, kpn, noisy, _ = setup
    plain = Pasadena(model, kpn, steps=10, kernel_step=0.05, confidence=2.0).run(noisy)
    diverse = Pasadena(model, kpn, steps=10, kernel_step=0.05, confidence=2.0, diversity=1.0).run(noisy)
    assert not torch.equal(plain["adv"], diverse["adv"])  # the loss saw other images
    with torch.no_grad():
        logits = model(diverse["adv"])
    assert torch.equal(logits.argmax(1) != diverse["labels"], diverse["flipped"])
    attacked = diverse["steps"] > 0
    done = Pasadena.margin(logits, diverse["labels"]) >= 2.0
    assert torch.all(done | ~attacked | (diverse["steps"] == 10))  # stopped early only when done
    again = Pasadena(model, kpn, steps=10, kernel_step=0.05, confidence=2.0, diversity=1.0).run(noisy)
    assert torch.equal(again["adv"], diverse["adv"])  # seeded


def test_bad_arguments(setup):
    model, kpn, _, _ = setup
    with pytest.raises(ValueError, match="variant"):
        Pasadena(model, kpn, variant="fast")
    with pytest.raises(ValueError, match="lam"):
        Pasadena(model, kpn, lam=1.5)
    with pytest.raises(ValueError, match="loss"):
        Pasadena(model, kpn, loss="hinge")
    with pytest.raises(ValueError, match="refine"):
        Pasadena(model, kpn, refine=-1)
    with pytest.raises(ValueError, match="confidence"):
        Pasadena(model, kpn, confidence=-1)
    with pytest.raises(ValueError, match="confidence"):
        Pasadena(model, kpn, variant="paper", confidence=2)
    with pytest.raises(ValueError, match="diversity"):
        Pasadena(model, kpn, diversity=1.5)


@pytest.mark.cuda
def test_sobel_edges_on_cuda_equal_cpu_and_stay_there():
    x = torch.rand(3, 3, 32, 32)
    cpu = SobelEdges()(x)
    gpu = SobelEdges()(x.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)


def test_float64_models_and_denoiser(setup):
    """A ``.double()`` classifier and KPN: Pasadena and denoise-then-attack feed each its own dtype
    (both failed with "Input type (float) and bias type (double)"); the result is float32, the labels
    the float32 model's, and denoise-then-attack stays in its ball around the denoised image."""
    from advkit.attacks import DenoiseThenAttack, MIFGSM

    model, kpn, noisy, _ = setup
    model64, kpn64 = copy.deepcopy(model).double(), copy.deepcopy(kpn).double()
    r32 = Pasadena(model, kpn, steps=3).run(noisy[:4])
    r64 = Pasadena(model64, kpn64, steps=3).run(noisy[:4])
    assert r64["adv"].dtype == torch.float32
    assert torch.equal(r64["labels"], r32["labels"])
    wrapped = DenoiseThenAttack(kpn64, MIFGSM(model64, eps=0.03, steps=2))
    adv = wrapped(noisy[:4])
    assert adv.dtype == torch.float32
    assert (adv - kpn(noisy[:4])).abs().max() <= 0.03 + 1e-5


def test_edges_by_name_and_the_flat_mask(setup):
    """``edges="canny"`` builds the edge model (a string was kept and failed at the call with "'str'
    object is not callable"); ``edges=None`` gives the documented flat mask sigmoid(−θ) (it was
    replaced by the Sobel default)."""
    from advkit.errors import UnknownNameError

    model, kpn, noisy, _ = setup
    assert isinstance(Pasadena(model, kpn).edges, SobelEdges)
    canny = Pasadena(model, kpn, edges="canny", steps=2)
    assert isinstance(canny.edges, CannyEdges) and canny.run(noisy[:2])["adv"].shape == (2, 3, 32, 32)
    flat = Pasadena(model, kpn, edges=None, steps=2, theta=0.5)
    mask = flat.run(noisy[:2])["mask"]
    torch.testing.assert_close(mask, torch.full_like(mask, float(torch.sigmoid(torch.tensor(-0.5)))))
    assert flat.config()["edges"] is None
    with pytest.raises(UnknownNameError, match="unknown edge model 'prewitt'"):
        Pasadena(model, kpn, edges="prewitt")

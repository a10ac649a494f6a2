"""The TV-minimization stand-in against ART's solver: same masks, same gradient, a nearer output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.defenses import create_defense, gradient_kind, is_randomized
from advkit.defenses.tvm_approx import art_tvm_masks, tv_gradient, tv_minimize_unrolled


@pytest.fixture(scope="module")
def cifar_32(cifar_test_npz):
    with np.load(cifar_test_npz) as z:
        return torch.from_numpy(z["x"][:32]).permute(0, 3, 1, 2).float().div(255)


def test_masks_are_the_ones_art_draws(cifar_32):
    """ART's minimizer run image by image with our masks reproduces TotalVarMin's output exactly."""
    tvm = create_defense("tvm:prob=0.9:lamb=0.1:seed=3")
    x = cifar_32[:4]
    expected = tvm.transform(x)
    masks = art_tvm_masks(4, 32, 32, 3, prob=0.9, seed=3)
    assert set(masks.unique().tolist()) == {0.0, 1.0} and 0.85 < masks.mean() < 0.95
    x_hwc = x.permute(0, 2, 3, 1).numpy()
    m_hwc = masks.permute(0, 2, 3, 1).numpy().astype(int)
    ours = np.stack([tvm.preprocessor._minimize(xi.copy(), mi) for xi, mi in zip(x_hwc, m_hwc)]).clip(0, 1)
    assert torch.equal(torch.from_numpy(ours).permute(0, 3, 1, 2).float(), expected)
    state = np.random.get_state()[1].copy()
    art_tvm_masks(1, 4, 4, 3, prob=0.5, seed=0)
    assert np.array_equal(np.random.get_state()[1], state)  # the global generator is left as it was


def test_gradient_is_arts_gradient():
    """`tv_gradient` per (image, channel) equals ART's `_deri_loss_func` on (H, W) arrays."""
    from art.defences.preprocessor.variance_minimization import TotalVarMin

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    z = (x + 0.05 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    mask = (torch.rand(x.shape, generator=gen) < 0.6).double()
    ours = tv_gradient(z, x, mask, lamb=0.3)
    for b in range(2):
        for c in range(3):
            art = TotalVarMin._deri_loss_func(
                z[b, c].numpy().ravel(), x[b, c].numpy(), mask[b, c].numpy().astype(int), 2, 0.3
            )
            np.testing.assert_allclose(ours[b, c].numpy().ravel(), art, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prob, lamb", [(0.9, 0.1), (0.3, 0.5)])
def test_unrolled_solver_is_nearer_arts_output_than_the_identity(cifar_32, prob, lamb):
    """Measured on CIFAR-10: (0.9, 0.1) 0.0044 against the identity's 0.0139; (0.3, 0.5) 0.013 against 0.058."""
    tvm = create_defense(f"tvm:prob={prob}:lamb={lamb}")
    art = tvm.transform(cifar_32)
    ours = tvm.stand_in(cifar_32)
    identity_error = (cifar_32 - art).abs().mean()
    assert (ours - art).abs().mean() < 0.5 * identity_error


def test_unrolled_solver_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(1, 2, 5, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = (torch.rand(x.shape, generator=gen) < 0.7).double()
    assert torch.autograd.gradcheck(lambda t: tv_minimize_unrolled(t, mask, 0.1, steps=3), (x,))


def test_unrolled_solver_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match=r"images \(1, 3, 4, 4\) and mask \(1, 3, 4, 5\)"):
        tv_minimize_unrolled(torch.rand(1, 3, 4, 4), torch.ones(1, 3, 4, 5), 0.1)


def test_tvm_backward_option(cifar_32):
    x = cifar_32[:2].clone().requires_grad_(True)
    solver = create_defense("tvm:prob=0.9:lamb=0.1")
    identity = create_defense("tvm:prob=0.9:lamb=0.1:backward=identity")
    assert gradient_kind(solver) == "BPDA (TV solver, unrolled)" and gradient_kind(identity) == "BPDA"
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (g_identity,) = torch.autograd.grad((identity(x) * weights).sum(), x)
    assert torch.equal(g_identity, weights)
    (g_solver,) = torch.autograd.grad((solver(x) * weights).sum(), x)
    (g_stand_in,) = torch.autograd.grad((solver.stand_in(x) * weights).sum(), x)
    assert torch.isfinite(g_solver).all() and torch.equal(g_solver, g_stand_in)
    assert not torch.allclose(g_solver, weights, atol=1e-2)
    with pytest.raises(ValueError, match="backward must be 'solver' or 'identity'"):
        create_defense("tvm:backward=exact")


def test_random_tvm_draws_new_masks_and_its_backward_uses_the_forwards(cifar_32):
    """``seed=None``: fresh masks every call (ART's own behaviour), repeatable under
    torch.manual_seed; BPDA differentiates the stand-in under the masks its own forward drew, even
    when other calls came in between (EOT runs several forwards)."""
    tvm = create_defense("tvm:prob=0.9:lamb=0.1:seed=none")
    assert tvm.seed is None and is_randomized(tvm) and not is_randomized(create_defense("tvm"))
    x = cifar_32[:2]
    torch.manual_seed(0)
    first, second = tvm(x), tvm(x)
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    assert torch.equal(tvm(x), first)

    torch.manual_seed(1)
    xr = x.clone().requires_grad_(True)
    out = tvm(xr)
    draw = tvm.draw
    tvm(x)  # another call, another draw
    assert tvm.draw != draw
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(out, xr, weights)
    xs = x.clone().requires_grad_(True)
    stand_in = tv_minimize_unrolled(xs, art_tvm_masks(2, 32, 32, 3, prob=0.9, seed=draw), 0.1)
    (expected,) = torch.autograd.grad(stand_in, xs, weights)
    torch.testing.assert_close(grad, expected)

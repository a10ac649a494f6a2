"""The base class's checks of what the caller passes: options by name, counts, radii, images,
and the class counts of the composite attacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import (
    CW,
    DIM,
    PGD,
    PGDL2,
    APGD,
    AutoAttack,
    GaussianNoise,
    MultiAttack,
    Square,
    get_attack,
)


def test_a_peers_option_name_points_to_advkits():
    """`alpha=` (torchattacks) or `max_iter=` (ART) failed with "Attack.__init__() got an unexpected
    keyword argument", naming neither the attack nor the option to use."""
    cases = [
        (lambda m: PGD(m, alpha=2 / 255), r"PGD has no option 'alpha' \(advkit's name for it: step= .* rel_step="),
        (lambda m: CW(m, max_iter=3), r"CW has no option 'max_iter' \(advkit's name for it: steps=\)"),
        (lambda m: Square(m, n_queries=10), r"Square has no option 'n_queries' \(advkit's name for it: queries=\)"),
        (lambda m: MultiAttack([PGD(m)], eps=0.1), r"no option 'eps' \(a radius goes to the call"),
        (lambda m: PGD(m, colour=1), r"PGD has no option 'colour'; its options: eps, steps, rel_step"),
    ]
    for build, needle in cases:
        with pytest.raises(TypeError, match=needle):
            build(nn.Flatten())


def test_torchattacks_positional_order_is_refused(tiny):
    # torchattacks' PGD(model, eps, alpha, steps): alpha lands in steps
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got 0.0078.* by keyword"):
        PGD(tiny, 8 / 255, 2 / 255, 10)
    with pytest.raises(ValueError, match="steps must be an integer"):
        PGD(tiny, steps=True)
    assert PGD(tiny, steps=torch.tensor(3).numpy().item()).steps == 3  # a NumPy-born int is an int
    # torchattacks' APGD(model, norm, eps): the norm lands in eps; the call said "new(): invalid data type 'str'"
    with pytest.raises(ValueError, match="eps must be a number or a tensor of radii, got 'Linf'"):
        APGD(tiny, "Linf")(torch.rand(2, 3, 8, 8))


def test_messages_name_the_option_that_is_wrong(tiny):
    with pytest.raises(ValueError, match="sigma must lie in"):
        GaussianNoise(sigma=25)
    with pytest.raises(ValueError, match="diversity_prob must be in"):
        DIM(tiny, diversity_prob=2)


def test_normalized_images_get_their_own_hint(tiny):
    mean, std = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1), torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 8, 8)
    x[0, :, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"normalized images\? pass \[0, 1\] images and put the normalization inside"):
        PGD(tiny, steps=1)((x - mean) / std)
    with pytest.raises(ValueError, match=r"0\.\.255 images\? divide by 255"):
        PGD(tiny, steps=1)(x * 255)


def test_multiattack_takes_the_radius_its_attacks_take(tiny):
    """An L2 radius above 1 was refused by MultiAttack's own L∞ check before any attack saw it."""
    x = torch.rand(2, 3, 8, 8)
    out = MultiAttack([PGDL2(tiny, steps=2)])(x, eps=1.5)
    assert ((out - x).flatten(1).norm(dim=1) <= 1.5 + 1e-5).all()
    with pytest.raises(ValueError, match=r"eps must lie in \[0, 1\]"):  # the L∞ attack refuses it
        MultiAttack([PGD(tiny, steps=2), PGDL2(tiny, steps=2)])(x, eps=1.5)


@pytest.mark.parametrize(("classes", "version", "stage", "needs"),
                         [(3, "standard", "apgd-t", 4), (2, "fast", "apgd-dlr", 3)])
def test_autoattack_checks_the_class_count_before_its_first_stage(classes, version, stage, needs):
    """APGD-T's loss needs 4 classes and DLR 3; AutoAttack ran its APGD-CE stage in full, then failed."""
    calls = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=f"{stage} needs a model of at least {needs} classes; this one has {classes}"):
        AutoAttack(model, version=version, steps=5, queries=5)(torch.rand(2, 3, 8, 8))
    assert len(calls) <= 2  # the label check and the clean pass, no attack step
    if version == "fast":
        AutoAttack(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), version="fast", steps=2)(torch.rand(2, 3, 8, 8))


def test_square_with_a_zero_radius_spends_no_queries(tiny):
    """eps = 0 returns the input; Square spent its whole budget finding that out."""
    calls = []
    hook = tiny.register_forward_hook(lambda *args: calls.append(1))
    try:
        x = torch.rand(2, 3, 8, 8)
        assert torch.equal(Square(tiny, eps=0.0, queries=500)(x), x)
    finally:
        hook.remove()
    assert len(calls) <= 2


def test_names_are_matched_loosely():
    assert get_attack("PGD") is PGD and get_attack("pgd-l2") is PGDL2 and get_attack("APGD_T").name == "apgd-t"


def test_a_default_radius_is_checked_where_the_attack_is_made(tiny):
    """`PGD(model, eps=8)` was accepted and failed at the first call, far from the mistake."""
    for build in (lambda: PGD(tiny, eps=8), lambda: AutoAttack(tiny, eps=-0.1), lambda: Square(tiny, eps=float("nan"))):
        with pytest.raises(ValueError, match="eps must lie in"):
            build()
    with pytest.raises(ValueError, match="eps must be a number"):
        PGD(tiny, eps="8/255")
    # an L2 radius may exceed 1: its norm is set after its eps
    assert PGDL2(tiny, eps=8).eps == 8 and APGD(tiny, norm="l2", eps=3).eps == 3
    assert PGD(tiny, eps=torch.tensor(0.03)).eps == pytest.approx(0.03)
    # a (B,) default for batches of B (refused as "shape (1,)" when checked as a scalar)
    per_sample = PGD(tiny, eps=torch.full((2,), 0.03), steps=1)
    assert per_sample(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="eps must lie in"):
        PGD(tiny, eps=torch.tensor([0.03, 8.0]))


def test_targeted_set_after_construction_is_checked(tiny):
    from advkit.attacks import DeepFool

    attack = PGD(tiny)
    attack.targeted = True
    assert attack.targeted and attack.config()["targeted"]
    deepfool = DeepFool(tiny)
    with pytest.raises(ValueError, match="deepfool has no targeted mode"):
        deepfool.targeted = True
    assert not deepfool.targeted
    # an attack pickled before `targeted` became a property keeps its mode
    state = dict(attack.__dict__)
    state["targeted"] = state.pop("_targeted")
    old = PGD.__new__(PGD)
    old.__dict__.update(state)
    assert old.targeted is True


def test_channels_last_layout_is_named(tiny):
    """NHWC images failed inside the model ("expected input to have 3 channels, but got 32")."""
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\) look channels-last .*permute\(0, 3, 1, 2\)"):
        PGD(tiny, steps=1)(torch.rand(2, 8, 8, 3), torch.zeros(2, dtype=torch.long))
    # NCHW images with other channel counts and a width of 1 or 3 are not taken for channels-last
    from advkit.attacks.base import check_images

    for shape in ((2, 4, 16, 3), (2, 6, 20, 1), (2, 3, 8, 3)):
        check_images(torch.rand(shape))

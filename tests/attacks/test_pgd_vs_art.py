"""Cross-check: our PGD against ART's ProjectedGradientDescentPyTorch with the same settings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from advkit.attacks import PGD
from advkit.models import create_classifier


@pytest.mark.slow
# SPEC's step eps/30. At 2e-3, 20 steps (measured: 30 % success for both; with SPEC's 40 steps 38 %
# and 39 %, at twice the time; docs/results.md). At 8/255 both attacks fool every image within 10
# steps (so agreement there would say nothing): 5 steps leave ~15 % standing. gen-adv's CLI test
# checks that PGD-40 at 8/255 leaves < 2 % correct.
@pytest.mark.parametrize(("eps", "steps"), [(2e-3, 20), (8 / 255, 5)])
def test_success_rate_matches_art(eps, steps, cifar_first_100, weights_dir):
    art_cls = pytest.importorskip("art.estimators.classification")
    art_evasion = pytest.importorskip("art.attacks.evasion")
    x, y = cifar_first_100
    model = create_classifier("resnet20")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = art_cls.PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(3, 32, 32),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        attack = art_evasion.ProjectedGradientDescentPyTorch(
            clf, norm=np.inf, eps=eps, eps_step=eps / 30, max_iter=steps, num_random_init=1,
            batch_size=100, verbose=False,
        )
        x_art = torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))
    ours = PGD(model, eps=eps, steps=steps, rel_step=1 / 30, seed=0)(x, y)
    with torch.no_grad():
        success_art = (model(x_art).argmax(1) != y).float().mean().item()
        success_ours = (model(ours).argmax(1) != y).float().mean().item()
    assert abs(success_ours - success_art) <= 0.03, (success_ours, success_art)
    assert 0.05 < success_ours < 0.95, success_ours  # neither attack saturated: the agreement means something
    assert (ours - x).abs().max() <= eps + 1e-6

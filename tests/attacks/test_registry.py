"""The attack registry: every attack is there under the name it records, builds by name, and keeps
the uniform contract ``attack(images, labels)`` → images in [0, 1] (in its ball where it has one)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import advkit.attacks as attacks
from advkit.attacks import Attack, DenoiseThenAttack, MultiAttack, create_attack, describe_attack, get_attack, list_attacks
from advkit.attacks.registry import register_attack
from advkit.attacks import parse_attack_options
from advkit.errors import UnknownNameError, UsageError

# Small budgets so every attack runs in a moment on the tiny model; the rest are each class's defaults.
QUICK = {
    "apgd": {"steps": 5}, "apgd-t": {"steps": 5, "n_targets": 2}, "autoattack": {"steps": 3, "queries": 20},
    "cw": {"steps": 10}, "ead": {"steps": 10, "binary_search_steps": 2, "c": 10.0}, "deepfool": {"steps": 5}, "fab": {"steps": 5}, "fab-t": {"steps": 5, "n_targets": 2},
    "pgd": {"steps": 5}, "pgd_l2": {"steps": 5}, "spsa": {"steps": 3, "samples": 8}, "square": {"queries": 20},
    "vmifgsm": {"samples": 2}, "hopskipjump": {"steps": 2, "init_evals": 10, "max_evals": 20}, "vnifgsm": {"samples": 2}, "sinifgsm": {"scales": 2},
}


def test_every_attack_class_is_registered_under_its_name():
    exported = {obj for obj in vars(attacks).values()
                if isinstance(obj, type) and issubclass(obj, Attack) and obj not in (Attack, DenoiseThenAttack, MultiAttack)}  # composites: no model-only constructor
    assert {get_attack(name) for name in list_attacks()} == exported
    for name in list_attacks():
        assert get_attack(name).name == name


def test_filters_and_errors():
    assert set(list_attacks(norm="l2")) == {"apgd", "apgd-t", "autoattack", "cw", "deepfool", "fab", "fab-t", "hopskipjump",
                                            "pgd_l2", "square"}
    assert list_attacks(norm="l1") == ["ead"]
    assert set(list_attacks(black_box=True)) == {"hopskipjump", "spsa", "square"}
    assert list_attacks("*fgsm") == ["fgsm", "mifgsm", "nifgsm", "sinifgsm", "tifgsm", "timifgsm", "vmifgsm",
                                     "vnifgsm"]
    with pytest.raises(UnknownNameError, match="unknown attack 'bim'; known attacks: apgd, apgd-t"):
        get_attack("bim")
    with pytest.raises(TypeError, match="Attack subclass"):
        register_attack(nn.Linear)  # type: ignore[type-var]


def test_parse_attack_options():
    opts = parse_attack_options("pgd", ["steps=20", "rel_step=1/10", "random-start=false", "step=none"])
    assert opts == {"steps": 20, "rel_step": pytest.approx(0.1), "random_start": False, "step": None}
    assert parse_attack_options("apgd", ["loss=dlr", "seed=3"]) == {"loss": "dlr", "seed": 3}
    for bad, needle in [(["eps=0.1"], "no option 'eps'"), (["steps=2.5"], "integer"), (["decay=1,2"], "one number"),
                        (["steps"], "KEY=VALUE"), (["steps=1", "steps=2"], "twice"), (["random_start=maybe"], "true or false")]:
        with pytest.raises(UsageError, match=needle):
            parse_attack_options("mifgsm" if bad == ["decay=1,2"] else "pgd", bad)


def test_describe():
    json.dumps([describe_attack(name) for name in list_attacks()])  # `advkit attacks --json` prints them all
    d = describe_attack("pgd")
    assert d["options"]["steps"] == 40 and d["options"]["rel_step"] is None and "model" not in d["options"]
    assert d["class"] == "advkit.attacks.pgd.PGD" and d["norms"] == ["linf"] and d["default_eps"] == pytest.approx(8 / 255)
    assert d["targeted"] and d["eot"] and not d["black_box"] and d["summary"].startswith("L∞ PGD")
    assert describe_attack("autoattack")["eot"]  # through its APGD stages
    assert describe_attack("cw")["minimum_norm"] and describe_attack("square")["black_box"]
    assert describe_attack("noise")["norms"] == [] and describe_attack("deepfool")["norms"] == ["l2", "linf"]


@pytest.mark.parametrize("name", [n for n in list_attacks() if n not in ("pasadena", "noise")])
def test_uniform_contract(tiny, name):
    """create_attack(name, model) then attack(images, labels): same shape, [0, 1], in the default ball."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        y = tiny(x).argmax(1)
    attack = create_attack(name, tiny, **QUICK.get(name, {}))
    assert attack.config()["name"] == name
    attack.reseed(7)
    adv = attack(x, y)
    attack(x, y)  # advances whatever generators the attack holds
    attack.reseed(7)
    assert torch.equal(attack(x, y), adv), "reseed must restart every random stream the attack draws from"
    assert adv.shape == x.shape and adv.dtype == torch.float32 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x), "the attack changed nothing, so the checks here would check nothing"
    eps = describe_attack(name)["default_eps"]
    if eps is not None:
        dist = (adv - x).flatten(1)
        size = dist.norm(dim=1) if attack.threat_norms == ("l2",) else dist.abs().amax(1)  # (no L1 default radius)
        assert (size <= eps + 1e-5).all(), (name, size)
    # an empty batch (the last batch of an exact split, a filter that kept nothing) is no error
    empty = attack(x[:0], y[:0])
    assert empty.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("name", [n for n in list_attacks() if n not in ("pasadena", "noise")])
def test_model_runs_in_eval_mode_and_gets_its_modes_back(name):
    """A model handed over in train mode (fresh from a training loop): the attack sees it in eval
    mode, as torchattacks and ART do, so its batch-norm statistics are neither used nor updated and
    dropout is off; afterwards every module has its own mode again."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for _ in range(2):
        net(torch.rand(16, 3, 8, 8))  # running statistics away from their initial values
    net[6].eval()  # a part the user keeps in eval mode
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    net.train()
    net[6].eval()
    attack = create_attack(name, net, **QUICK.get(name, {}))
    attack.reseed(3)
    adv = attack(x, y)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items()), "the attack changed the model"
    assert [m.training for m in net] == [True, True, True, True, True, True, False]
    net.eval()
    attack.reseed(3)
    assert torch.equal(attack(x, y), adv)  # what attacking the model in eval mode gives


@pytest.mark.parametrize("name", [n for n in list_attacks() if n not in ("pasadena", "noise")])
def test_model_gets_its_own_dtype(tiny, name):
    """A ``.double()`` or ``.bfloat16()`` model gets images in its dtype (it failed with "Input type
    (float) and bias type (double) should be the same"), whatever the images' float dtype; the
    attack's arithmetic and its output stay float32, in the default ball."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    eps = describe_attack(name)["default_eps"]
    for dtype, images in [(torch.float64, x), (torch.bfloat16, x.double()), (torch.float32, x.half())]:
        model = copy.deepcopy(tiny).to(dtype)
        with torch.no_grad():
            y = model(x.to(dtype)).argmax(1)
        adv = create_attack(name, model, **QUICK.get(name, {}))(images, y)
        assert adv.dtype == torch.float32 and adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        if eps is not None:
            dist = (adv - images.float()).flatten(1)
            size = dist.norm(dim=1) if attack_is_l2(name) else dist.abs().amax(1)
            assert (size <= eps + 1e-5).all(), (name, dtype, size)


@pytest.mark.parametrize("name", [n for n in list_attacks() if n not in ("pasadena", "noise")])
def test_call_contexts_give_the_same_images(tiny, name):
    """Under no_grad, with inputs made under inference_mode (evaluation loops; the gradient attacks
    failed there with "element 0 of tensors does not require grad"), and wrapped in
    DenoiseThenAttack with an identity denoiser (which passed eps and init to attacks that take
    neither: CW, Square, FAB, ... failed): the same images as the plain call."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        y = tiny(x).argmax(1)
    attack = create_attack(name, tiny, **QUICK.get(name, {}))
    attack.reseed(5)
    expected = attack(x, y)
    attack.reseed(5)
    with torch.no_grad():
        assert torch.equal(attack(x, y), expected)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
    attack.reseed(5)
    with torch.inference_mode():
        assert torch.equal(attack(xi, yi), expected)
    wrapped = DenoiseThenAttack(nn.Identity(), attack)
    attack.reseed(5)
    assert torch.equal(wrapped(x, y), expected)
    if attack.forward_takes("eps"):
        attack.reseed(5)
        assert torch.equal(wrapped(x, y, eps=attack.eps), expected)
    else:
        with pytest.raises(ValueError, match=f"{attack.name} takes no eps"):
            wrapped(x, y, eps=0.01)


class _TupleOut(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x.mean()


class _DictOut(_TupleOut):
    def forward(self, x):
        return {"logits": self.net(x)}


class _OneLogit(_TupleOut):
    def forward(self, x):
        return self.net(x)[:, :1]


@pytest.mark.parametrize("name", [n for n in list_attacks() if n not in ("pasadena", "noise")])
def test_a_model_that_returns_no_logits_tensor_is_one_clear_error(tiny, name):
    """A tuple or a dict failed deep in the attack ("'tuple' object has no attribute 'float'"); one
    logit gave SPSA all-NaN images and every cross-entropy attack a zero loss, silently."""
    x = torch.rand(2, 3, 8, 8)
    for wrapper, needle in ((_TupleOut, "got a tuple .*first output"), (_DictOut, r"got a dict .*out\['logits'\]"),
                            (_OneLogit, r"at least 2 classes, got shape \(1, 1\) .*binary classifier")):
        attack = create_attack(name, wrapper(tiny).eval(), **QUICK.get(name, {}))
        with pytest.raises(ValueError, match=needle):
            attack(x, torch.zeros(2, dtype=torch.long))


def attack_is_l2(name: str) -> bool:
    return get_attack(name).threat_norms == ("l2",)


def test_noise_and_pasadena_build_by_name(tiny):
    x = torch.rand(2, 3, 8, 8)
    noisy = create_attack("noise", None, sigma=0.1)(x)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    with pytest.raises(TypeError, match="denoiser"):
        create_attack("pasadena", tiny)  # needs its denoiser


def test_docs_table_lists_every_attack():
    """docs/attacks.md's table names every registered attack class (the docs keep up with the registry)."""
    from pathlib import Path

    table = (Path(__file__).resolve().parents[2] / "docs" / "attacks.md").read_text()
    missing = [get_attack(n).__name__ for n in list_attacks() if f"`{get_attack(n).__name__}`" not in table]
    assert not missing, missing

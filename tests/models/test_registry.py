from __future__ import annotations

import pytest
import torch

from advkit.errors import CheckpointError, UnknownNameError, WeightsNotFoundError
from advkit.models import create_classifier, get_model_spec, list_models, register_model
from advkit.models.cifar_resnet import CifarResNet


def test_list_models_has_cifar_and_imagenet():
    names = list_models()
    for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet50", "vgg16", "inception_v3"):
        assert name in names
    assert list_models(dataset="cifar10") == ["resnet20", "resnet32", "resnet44", "resnet56"]
    assert list_models("resnet5*") == ["resnet50", "resnet56"]


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="resnet20"):
        get_model_spec("resnet21")


@pytest.mark.parametrize("depth,params", [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018)])
def test_cifar_resnet_parameter_counts(depth, params):
    assert sum(p.numel() for p in CifarResNet(depth).parameters()) == params


def test_cifar_weights_load_strict(weights_dir):
    model = create_classifier("resnet20")
    assert model.weights_sha256.startswith("12fca82f")
    assert model.identity.startswith("resnet20@sha256:12fca82f")
    assert not model.training


@pytest.mark.parametrize("name,expected", [("resnet20", 91.20), ("resnet56", 91.90)])
def test_cifar_accuracy_on_first_1000(name, expected, cifar_first_1000, weights_dir):
    """Top-1 on the first 100 test images per class within 1.5 points of data/SOURCES.md."""
    x, y = cifar_first_1000
    model = create_classifier(name)
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 250]).argmax(1) for i in range(0, len(x), 250)])
    acc = 100 * (pred == y).float().mean().item()
    assert abs(acc - expected) <= 1.5, acc


def test_classifier_normalizes_inside(weights_dir):
    model = create_classifier("resnet20")
    x = torch.rand(2, 3, 32, 32)
    # the constants ../shared/data/SOURCES.md gives for these checkpoints (not the model's own)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - mean) / std))


def test_stored_predictions_of_a_model_in_another_dtype():
    """The predictions pair stores record fed float32 images to every model, so a `.double()`
    classifier failed (float input, double bias); it gets its own dtype, as the attacks give it."""
    from advkit.models.classifier import strict_fp32_predictions

    torch.manual_seed(0)
    model = create_classifier("resnet20", pretrained=False).eval()
    x = torch.rand(4, 3, 32, 32)
    expected = model(x).argmax(1)
    assert torch.equal(strict_fp32_predictions(model, x), expected)
    assert torch.equal(strict_fp32_predictions(model.double(), x), expected)


def test_classifier_rejects_wrong_shape():
    model = create_classifier("resnet20", pretrained=False)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32))


def test_missing_cifar_weights_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVKIT_HOME", str(tmp_path))
    monkeypatch.setenv("ADVKIT_WEIGHTS_DIRS", "")
    with pytest.raises(WeightsNotFoundError, match="--weights FILE"):
        create_classifier("resnet20")


def test_weights_file_roundtrip_safetensors_and_torch(tmp_path):
    from safetensors.torch import save_file

    model = create_classifier("resnet20", pretrained=False)
    state = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pt")
    x = torch.rand(2, 3, 32, 32)
    for f in ("w.safetensors", "w.pt"):
        loaded = create_classifier("resnet20", weights=tmp_path / f)
        torch.testing.assert_close(loaded(x), model(x))


def test_imagenet_model_with_user_weights_file(tmp_path):
    """The --weights FILE path for ImageNet models, with weights we save ourselves (offline)."""
    model = create_classifier("resnet50", pretrained=False)
    torch.save(model.net.state_dict(), tmp_path / "r50.pth")
    loaded = create_classifier("resnet50", weights=tmp_path / "r50.pth")
    assert loaded.num_classes == 1000 and loaded.class_names[0] == "tench"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_wrong_and_pickled_weights_fail_cleanly(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit resnet20") as caught:
        create_classifier("resnet20", weights=tmp_path / "bad.pt")
    # one line that counts what is wrong, not PyTorch's list of every key
    message = str(caught.value)
    assert "\n" not in message and "115 of 116 tensors missing (e.g. bn1.weight)" in message
    assert "1 of another shape (e.g. conv1.weight: (1,) where (16, 3, 3, 3) is needed)" in message
    torch.save(create_classifier("resnet32", pretrained=False).net.state_dict(), tmp_path / "r32.pt")
    with pytest.raises(CheckpointError, match=r"do not fit resnet20: \d+ unexpected \(e.g. layer1.3.conv1.weight\)$"):
        create_classifier("resnet20", weights=tmp_path / "r32.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="cannot load"):
        create_classifier("resnet20", weights=tmp_path / "trunc.pt")

    import argparse  # any class outside torch's weights-only allowlist

    torch.save({"obj": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"pickles argparse\.Namespace") as refused:
        create_classifier("resnet20", weights=tmp_path / "evil.pt")
    # one short line, not PyTorch's paragraph of advice to turn weights_only off
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint of tensors$"):
        create_classifier("resnet20", weights=tmp_path / "text.pt")
    # files too short for a header, for torch or for safetensors: still a CheckpointError, one line
    for name in ("junk.pt", "junk.safetensors"):
        (tmp_path / name).write_bytes(b"junk")
        with pytest.raises(CheckpointError, match=f"cannot load weights from .*{name}"):
            create_classifier("resnet20", weights=tmp_path / name)
    with pytest.raises(CheckpointError, match="not found"):
        create_classifier("resnet20", weights=tmp_path / "nope.pt")


def test_offline_imagenet_without_weights(monkeypatch, tmp_path, capsys):
    """No network and nothing cached: one line naming both ways to supply weights, and nothing
    printed (torch.hub's own "Downloading:" line goes to stdout, the CLI's data channel)."""
    import urllib.request

    monkeypatch.setenv("ADVKIT_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsNotFoundError, match=r"--weights FILE.*ADVKIT_HOME"):
        create_classifier("vgg16")
    assert capsys.readouterr() == ("", "")


def test_register_model_adds_a_name():
    spec = get_model_spec("resnet20")
    from dataclasses import replace

    register_model(replace(spec, name="resnet20-copy"))
    try:
        assert "resnet20-copy" in list_models()
    finally:
        from advkit.models.registry import _REGISTRY

        _REGISTRY.pop("resnet20-copy")


def test_torch_hub_cache_is_read_as_tensors_only(tmp_path, monkeypatch):
    """torch.hub unpickles what it finds in its cache unless told weights_only: a file there that
    pickles an object is refused, a damaged one is one line naming it, a state dict loads offline."""
    import argparse

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ADVKIT_HOME", str(tmp_path / "advkit"))
    monkeypatch.delenv("ADVKIT_WEIGHTS_DIRS", raising=False)
    url = torchvision.models.get_model_weights("resnet50").DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save({"obj": argparse.Namespace(x=1)}, cached)
    with pytest.raises(CheckpointError, match=r"torch.hub's cache .*pickles argparse\.Namespace"):
        create_classifier("resnet50")
    cached.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="delete the file to download it again"):
        create_classifier("resnet50")
    torch.save(create_classifier("resnet50", pretrained=False).net.state_dict(), cached)
    assert create_classifier("resnet50").num_classes == 1000

"""The classifiers advkit registers: CIFAR-10 ResNets and torchvision's ImageNet models."""

from __future__ import annotations

import contextlib
import io
from functools import partial
from pathlib import Path
from urllib.error import URLError

import torch

from advkit.data.sources import CIFAR10_CLASSES
from advkit.errors import CheckpointError, WeightsNotFoundError
from advkit.models.cifar_resnet import CifarResNet
from advkit.models.registry import ModelSpec, register_model
from advkit.models.weights import load_state_dict_file

# The akamaster checkpoints were trained on ImageNet-normalized inputs (data/SOURCES.md).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

for _depth in (20, 32, 44, 56):
    register_model(
        ModelSpec(
            name=f"resnet{_depth}",
            dataset="cifar10",
            input_size=(32, 32),
            num_classes=10,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            build=partial(CifarResNet, _depth, 10),
            load_state=load_state_dict_file,
            class_names=lambda: list(CIFAR10_CLASSES),
            weight_hint=(
                f"the resnet{_depth}.th checkpoint of akamaster/pytorch_resnet_cifar10"
            ),
            description=f"CIFAR-10 ResNet-{_depth} (option-A shortcuts)",
            feature_layers=("layer1", "layer2", "layer3"),
        )
    )


def _torchvision_builder(arch: str):
    def build() -> torch.nn.Module:
        # imported here, not at registration: torchvision pulls in torch._dynamo (≈3 s), which no
        # CIFAR model needs
        import torchvision

        kwargs = {"weights": None}
        if arch == "inception_v3":
            # torchvision's pretrained Inception expects transform_input=True and aux logits.
            kwargs.update(aux_logits=True, transform_input=True, init_weights=False)
        return torchvision.models.get_model(arch, **kwargs)

    return build


def _torchvision_download(arch: str) -> tuple[dict[str, torch.Tensor], Path]:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        # torch.hub writes "Downloading: URL" to stdout even with progress=False: the library never
        # prints, and stdout carries the CLI's data (--json). torch.hub unpickles whatever it finds
        # in its cache unless told weights_only (its default is False): advkit reads only tensors.
        with contextlib.redirect_stdout(io.StringIO()):
            state = weights.get_state_dict(progress=False, check_hash=False, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (no network; a damaged or foreign file in torch.hub's cache)
        if isinstance(exc, URLError) or not path.is_file():
            raise WeightsNotFoundError(
                f"cannot download {arch} weights ({type(exc).__name__}): pass --weights FILE "
                f"or put {arch}.pth in $ADVKIT_HOME/weights/"
            ) from exc
        from advkit.models.weights import describe_load_error

        raise CheckpointError(f"cannot load {arch} weights from torch.hub's cache {path}: "
                              f"{describe_load_error(exc)}; delete the file to download it again") from exc
    return state, path


def _imagenet_classes(arch: str) -> list[str]:
    import torchvision

    return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])


for _arch, _size, _layers in (
    ("resnet50", 224, ("layer1", "layer2", "layer3", "layer4")),
    ("vgg16", 224, ("features.15", "features.22", "features.29")),
    ("inception_v3", 299, ("Mixed_5d", "Mixed_6e", "Mixed_7c")),
):
    register_model(
        ModelSpec(
            name=_arch,
            dataset="imagenet",
            input_size=(_size, _size),
            num_classes=1000,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            build=_torchvision_builder(_arch),
            load_state=load_state_dict_file,
            class_names=partial(_imagenet_classes, _arch),
            download=partial(_torchvision_download, _arch),
            weight_hint=f"torchvision's {_arch} ImageNet weights",
            description=f"ImageNet {_arch} (torchvision)",
            feature_layers=_layers,
        )
    )

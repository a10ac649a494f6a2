"""`create_classifier`: build a registered classifier and load its weights."""

from __future__ import annotations

import os
from pathlib import Path

from advkit.errors import WeightsNotFoundError
from advkit.models.classifier import Classifier
from advkit.models.registry import get_model_spec
from advkit.models.weights import find_weights, load_state_strictly
from advkit.utils import sha256_file


def create_classifier(
    name: str, weights: str | os.PathLike[str] | None = None, *, pretrained: bool = True
) -> Classifier:
    """Build the classifier registered as ``name`` in eval mode, on the CPU.

    Weights come from ``weights`` if given, else ``$ADVKIT_HOME/weights/<name>.*`` (or a folder in
    ``$ADVKIT_WEIGHTS_DIRS``), else torchvision's download (ImageNet models). With
    ``pretrained=False`` the network keeps its random initialization.

    Raises:
        UnknownNameError: ``name`` is not registered.
        WeightsNotFoundError: no weights anywhere (offline, nothing cached, no file).
        CheckpointError: the file is unreadable or does not fit the architecture.
    """
    spec = get_model_spec(name)
    net = spec.build()
    sha: str | None = None
    path: Path | None = None
    if pretrained:
        path = Path(weights) if weights is not None else find_weights(name)
        if path is not None:
            state = spec.load_state(path)
        elif spec.download is not None:
            state, path = spec.download()
        else:
            raise WeightsNotFoundError(
                f"no weights for {name}: pass --weights FILE, or put {name}.th in "
                f"$ADVKIT_HOME/weights/ or a folder listed in $ADVKIT_WEIGHTS_DIRS "
                f"(expected: {spec.weight_hint})"
            )
        load_state_strictly(net, state, f"weights in {path} do not fit {name}")
        sha = sha256_file(path) if path.is_file() else None
    model = Classifier(
        net,
        spec.mean,
        spec.std,
        name=name,
        dataset=spec.dataset,
        num_classes=spec.num_classes,
        input_size=spec.input_size,
        class_names=spec.class_names(),
        weights_sha256=sha,
        weights_path=str(path) if path is not None else None,
    )
    return model.eval()

"""Finding and loading classifier weights without ever unpickling arbitrary objects.

Resolution order: an explicit file (``--weights FILE``), then ``$ADVKIT_HOME/weights/<name>.*``
(and any folder in ``$ADVKIT_WEIGHTS_DIRS``), then torchvision's download for ImageNet models.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from advkit.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".th", ".bin")


def advkit_home() -> Path:
    """``$ADVKIT_HOME`` or ``~/.cache/advkit``."""
    return Path(os.environ.get("ADVKIT_HOME", Path.home() / ".cache" / "advkit")).expanduser()


def weight_search_dirs() -> list[Path]:
    """Folders searched for ``<name>.*`` weights files, in order."""
    dirs = [advkit_home() / "weights"]
    extra = os.environ.get("ADVKIT_WEIGHTS_DIRS", "")
    dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return dirs


def find_weights(name: str) -> Path | None:
    """The first ``<name>.<suffix>`` or ``<name>-<tag>.<suffix>`` file in the search folders."""
    for folder in weight_search_dirs():
        if not folder.is_dir():
            continue
        candidates = sorted(
            p
            for p in folder.iterdir()
            if p.suffix in WEIGHT_SUFFIXES and (p.stem == name or p.stem.startswith(name + "-"))
        )
        if candidates:
            return candidates[0]
    return None


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file, with ``weights_only=True``.

    Accepts a bare state dict or a dict holding one under ``state_dict``/``model``/``state``;
    strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load weights from {path}: {first}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}

"""Finding and loading classifier weights without ever unpickling arbitrary objects.

Resolution order: an explicit file (``--weights FILE``), then ``$ADVKIT_HOME/weights/<name>.*``
(and any folder in ``$ADVKIT_WEIGHTS_DIRS``), then torchvision's download for ImageNet models.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

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


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def describe_load_error(exc: BaseException) -> str:
    """One short reason for a failed ``torch.load(..., weights_only=True)`` or safetensors read.

    PyTorch's own message runs to several lines of advice (re-run with ``weights_only=False``) that
    advkit will not follow: it names what the file held instead, or that it is no checkpoint at all.
    """
    text = str(exc).strip()
    if "Weights only load failed" in text:
        refused = _REFUSED_GLOBAL.search(text)
        if refused:
            return (f"it pickles {refused.group(1)}, and advkit reads only tensors (weights_only=True); "
                    "save the model's state_dict() or a .safetensors file instead")
        return "not a PyTorch checkpoint of tensors"
    return text.splitlines()[0] if text else type(exc).__name__


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
    except Exception as exc:  # noqa: BLE001  (a damaged file fails in pickle, struct, zipfile, safetensors...)
        raise CheckpointError(f"cannot load weights from {path}: {describe_load_error(exc)}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def state_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """One line on how ``state`` fails to fit ``model`` ("" when it fits): how many tensors are
    missing, unexpected or of another shape, each with its first example. PyTorch's own message
    lists every key over many lines."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    reshaped = [k for k in ours if k in state and state[k].shape != ours[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(ours)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} where "
                     f"{tuple(ours[k].shape)} is needed)")
    return "; ".join(parts)


def load_state_strictly(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state, strict=True)``, raising `CheckpointError` ("``what``: ...")
    with a one-line account of the mismatch instead of PyTorch's multi-line one."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # (after the attempt: modules may accept what a key comparison would not, e.g. BatchNorm
        # fills in num_batches_tracked, absent from older checkpoints)
        problem = state_mismatch(model, state) or str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{what}: {problem}") from exc

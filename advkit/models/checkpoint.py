"""Denoiser checkpoints: safetensors weights plus a JSON config, never pickled objects.

A checkpoint ``NAME`` is ``NAME.safetensors`` (weights; the config is also embedded in its
metadata, so the single file is enough) and ``NAME.json`` (config, training record, metrics).
`load_denoiser` accepts either file, the stem, or a training folder (it takes ``best``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from advkit.errors import CheckpointError, OutputError
from advkit.models.denoisers import DENOISER_ARCHS, Denoiser, create_denoiser
from advkit.models.weights import load_state_strictly
from advkit.utils import atomic_path

CONFIG_KEY = "advkit_denoiser_config"


def save_denoiser(model: Denoiser, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors``) and its ``.json`` sidecar atomically; return the weights path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    record = {"config": dict(model.config), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".safetensors.tmp") as tmp:
        try:
            save_file(state, str(tmp), metadata={CONFIG_KEY: json.dumps(model.config, sort_keys=True)})
        except Exception as exc:  # noqa: BLE001  (safetensors raises its own error type for I/O failures)
            raise OutputError(f"cannot write {path}: {' '.join(str(exc).split())}") from exc
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The ``.safetensors`` file a user-given path means (file, stem, sidecar, or training folder)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        found = sorted(p.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise CheckpointError(f"{p}: no best.safetensors or last.safetensors in this folder")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors" and not p.is_file():
        p = p.with_name(p.name + ".safetensors")
    if not p.is_file():
        raise CheckpointError(f"denoiser checkpoint not found: {path}")
    return p


def read_checkpoint_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON record of a checkpoint (sidecar if present, else the config embedded in the weights)."""
    weights = resolve_checkpoint(path)
    sidecar = weights.with_suffix(".json")
    if sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
            raise CheckpointError(f"{sidecar}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise CheckpointError(f"{sidecar}: no 'config' object")
        return record
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
        raise CheckpointError(f"{weights}: not a readable safetensors file ({type(exc).__name__})") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{weights}: no denoiser config (neither a .json beside it nor embedded metadata)")
    return {"config": json.loads(meta[CONFIG_KEY])}


def load_denoiser(
    path: str | os.PathLike[str], *, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> Denoiser:
    """Rebuild a denoiser of any architecture from its checkpoint, in eval mode.

    Args:
        path: ``.safetensors``/``.json`` file, its stem, or a training output folder.
        arch: if given, the checkpoint must be of this architecture.

    Raises:
        CheckpointError: missing, truncated or corrupt files, another architecture, or weights
            that do not fit the config.
    """
    from safetensors.torch import load_file

    weights = resolve_checkpoint(path)
    record = read_checkpoint_record(weights)
    config = dict(record["config"])
    found_arch = config.pop("arch", None)
    if found_arch not in DENOISER_ARCHS:
        raise CheckpointError(f"{weights}: unknown denoiser architecture {found_arch!r}")
    if arch is not None and found_arch != arch:
        raise CheckpointError(f"{weights} is a {found_arch} checkpoint, not {arch}")
    try:
        model = create_denoiser(found_arch, **config)
    except ValueError as exc:
        raise CheckpointError(f"{weights}: {exc}") from exc
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
        raise CheckpointError(f"{weights}: truncated or corrupt weights ({type(exc).__name__}: {exc})") from exc
    load_state_strictly(model, state, f"{weights}: weights do not fit the {found_arch} config")
    return model.eval()

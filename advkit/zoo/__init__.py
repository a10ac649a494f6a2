"""Denoiser checkpoints shipped inside the package, registered by name.

``index.json`` lists each checkpoint: its file (``<name>.safetensors`` beside it, with the config
embedded), what it is, how it was trained and what it measured (docs/zoo.md has the commands).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from advkit.errors import UnknownNameError

DEFAULT_DENOISER = "advfilter-cifar10-filt"


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    path = Path(str(resources.files("advkit.zoo") / "index.json"))
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def list_denoisers() -> list[str]:
    """Names of the shipped denoisers (those whose weights file is present)."""
    return sorted(name for name in _index() if zoo_file(name, check=False).is_file())


def zoo_entry(name: str) -> dict[str, Any]:
    """The index record of a shipped denoiser."""
    if name == "default":
        name = DEFAULT_DENOISER
    try:
        return {"name": name, **_index()[name]}
    except KeyError:
        known = ", ".join(list_denoisers()) or "none"
        raise UnknownNameError(f"unknown denoiser {name!r}; shipped: {known} (or give a checkpoint path)") from None


def zoo_file(name: str, check: bool = True) -> Path:
    """Path of a shipped denoiser's ``.safetensors`` file."""
    if name == "default":
        name = DEFAULT_DENOISER
    entry = _index().get(name) if not check else zoo_entry(name)
    filename = (entry or {}).get("file", f"{name}.safetensors")
    path = Path(str(resources.files("advkit.zoo") / filename))
    if check and not path.is_file():
        raise UnknownNameError(f"denoiser {name!r} is listed but its weights file is missing from the install")
    return path


def resolve_denoiser(spec: str) -> Path:
    """A denoiser name (shipped) or a checkpoint path → the checkpoint path to load."""
    candidate = Path(spec)
    if spec == "default" or spec in _index():
        return zoo_file(spec)
    if candidate.exists() or candidate.suffix in (".safetensors", ".json") or "/" in spec:
        return candidate
    return zoo_file(spec)  # raises UnknownNameError listing the shipped names

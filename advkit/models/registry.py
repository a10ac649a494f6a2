"""A registry of classifiers by name, in the spirit of timm's ``register_model``/``list_models``.

Every classifier the registry builds takes [0, 1] RGB NCHW input and normalizes inside.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkit.errors import UnknownNameError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a classifier before building it.

    ``build`` returns the bare network (no weights, expects normalized input);
    ``load_state`` turns a weights file into a state dict for it;
    ``download`` (ImageNet models) fetches the official weights and returns (state dict, file path).
    """

    name: str
    dataset: str
    input_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], nn.Module]
    load_state: Callable[[Path], dict[str, torch.Tensor]]
    class_names: Callable[[], list[str]]
    download: Callable[[], tuple[dict[str, torch.Tensor], Path]] | None = None
    weight_hint: str = ""
    description: str = ""
    feature_layers: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry under ``spec.name`` (re-registering a name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: str = "*", dataset: str | None = None) -> list[str]:
    """Registered classifier names matching a shell-style ``pattern``, sorted."""
    names = [
        n
        for n, s in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (dataset is None or s.dataset == dataset)
    ]
    return sorted(names)


def get_model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` registered as ``name``; `UnknownNameError` listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise UnknownNameError(f"unknown model {name!r}; known models: {known}") from None

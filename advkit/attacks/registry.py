"""A registry of attacks by name, in the spirit of timm's ``register_model``/``list_models``.

Every attack file registers its class with `register_attack`; `create_attack("pgd", model, eps=...)`
builds one by name, `list_attacks()` and `describe_attack()` say what there is (``advkit attacks``).
A name is the class's ``name``, the one recorded in stores and results.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, TypeVar

from torch import nn

from advkit.attacks.base import Attack
from advkit.errors import UnknownNameError

_REGISTRY: dict[str, type[Attack]] = {}
A = TypeVar("A", bound=type[Attack])


def register_attack(cls: A) -> A:
    """Class decorator: add ``cls`` under ``cls.name`` (re-registering a name replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)) or cls.name == Attack.name:
        raise TypeError(f"register_attack takes an Attack subclass with its own name, got {cls!r}")
    _REGISTRY[cls.name] = cls
    return cls


def list_attacks(pattern: str = "*", *, norm: str | None = None, black_box: bool | None = None) -> list[str]:
    """Registered attack names matching a shell-style ``pattern``, sorted; ``norm`` (``linf``,
    ``l2``, ``l1``) keeps the attacks bounded in that norm, ``black_box`` those that do (not) need gradients."""
    return sorted(
        name
        for name, cls in _REGISTRY.items()
        if fnmatch.fnmatch(name, pattern)
        and (norm is None or norm in cls.threat_norms)
        and (black_box is None or cls.black_box == black_box)
    )


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name``; `UnknownNameError` listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}") from None


def create_attack(name: str, model: nn.Module, **kwargs: Any) -> Attack:
    """``get_attack(name)(model, **kwargs)``: the attack ``name`` on ``model`` with its defaults
    where ``kwargs`` says nothing (e.g. ``create_attack("pgd", model, eps=8 / 255, steps=10)``)."""
    return get_attack(name)(model, **kwargs)


def describe_attack(name: str) -> dict[str, Any]:
    """What ``advkit attacks`` shows: class, norms, targeted and EOT support, black box or
    minimum-norm, default radius, and the first paragraph of the class's docstring."""
    cls = get_attack(name)
    params = inspect.signature(cls.__init__).parameters
    eps = params.get("eps")
    first_paragraph = (inspect.getdoc(cls) or "").split("\n\n")[0]
    return {
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "norms": list(cls.threat_norms),
        "targeted": cls.supports_targeted,
        "eot": cls.supports_eot or "eot_samples" in params,  # (AutoAttack passes it to its APGD stages)
        "black_box": cls.black_box,
        "minimum_norm": cls.minimum_norm,
        "default_eps": eps.default if eps is not None and isinstance(eps.default, float) else None,
        "summary": " ".join(first_paragraph.replace("``", "").replace("`", "").split()),
    }

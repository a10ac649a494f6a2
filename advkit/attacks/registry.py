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


def _loose(name: str) -> str:
    return name.lower().replace("_", "-")


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name``, matched ignoring case and ``-`` against ``_``
    (``"PGD"``, ``"pgd-l2"``, ``"APGD_T"``); `UnknownNameError` listing the known names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    matches = [cls for key, cls in _REGISTRY.items() if _loose(key) == _loose(name)]
    if len(matches) == 1:
        return matches[0]
    raise UnknownNameError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}")


def create_attack(name: str, model: nn.Module, **kwargs: Any) -> Attack:
    """``get_attack(name)(model, **kwargs)``: the attack ``name`` on ``model`` with its defaults
    where ``kwargs`` says nothing (e.g. ``create_attack("pgd", model, eps=8 / 255, steps=10)``)."""
    return get_attack(name)(model, **kwargs)


# Constructor keywords set by the caller, not by ``--attack-option``.
_RESERVED_PARAMETERS = frozenset({"self", "model", "eps", "precision", "channels_last"})


def attack_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of attack ``name``'s constructor that options may set (its own ones,
    e.g. PGD's ``steps``, ``rel_step``, ``seed``; not ``model``, ``eps`` or the base class's)."""
    params = inspect.signature(get_attack(name).__init__).parameters
    return {
        key: p
        for key, p in params.items()
        if key not in _RESERVED_PARAMETERS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def parse_attack_options(name: str, options: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["decay=0.5", "steps=20"]`` → ``{"decay": 0.5, "steps": 20}``, each value read as the type
    of the parameter's annotation (int, float — fractions such as ``2/255`` allowed —, bool, str);
    `UsageError` for a malformed option, a parameter attack ``name`` lacks, or a bad value."""
    from advkit.errors import UsageError
    from advkit.utils import parse_float_list

    params = attack_parameters(name)
    out: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key, text = key.strip().replace("-", "_"), text.strip()
        if not sep or not key or not text:
            raise UsageError(f"attack option {option!r} must look like KEY=VALUE (e.g. decay=0.5)")
        if key not in params:
            raise UsageError(f"{name} has no option {key!r}; it takes: {', '.join(params) or 'none'}")
        if key in out:
            raise UsageError(f"attack option {key!r} given twice")
        annotation = str(params[key].annotation)
        if text.lower() == "none" and "None" in annotation:
            out[key] = None
        elif "bool" in annotation:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UsageError(f"{name} option {key} takes true or false, got {text!r}")
            out[key] = text.lower() in ("true", "1", "yes")
        elif "float" in annotation:
            values = parse_float_list(text, f"{name} option {key}")
            if len(values) != 1:
                raise UsageError(f"{name} option {key} takes one number, got {text!r}")
            out[key] = values[0]
        elif "int" in annotation:
            try:
                out[key] = int(text)
            except ValueError:
                raise UsageError(f"{name} option {key} takes an integer, got {text!r}") from None
        else:
            out[key] = text
    return out


def describe_attack(name: str) -> dict[str, Any]:
    """What ``advkit attacks`` shows: class, norms, targeted and EOT support, black box or
    minimum-norm, default radius, the options with their defaults (`attack_parameters`), and the
    first paragraph of the class's docstring."""
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
        "options": {
            key: (None if p.default is inspect.Parameter.empty else p.default)
            for key, p in attack_parameters(name).items()
        },
        "summary": " ".join(first_paragraph.replace("``", "").replace("`", "").split()),
    }

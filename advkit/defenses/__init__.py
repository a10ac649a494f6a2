"""Input defenses on [0, 1] NCHW images: AdvFilter denoisers and classical baselines.

`create_defense(name)` builds any of them by name: ``advfilter`` (the shipped Filt default),
``pafilt`` (the shipped PA-Filt), a shipped denoiser name or checkpoint path, ``jpeg``,
``smoothing``, ``bitdepth``, ``tvm``, ``gaussian`` or ``none``. A classical defense takes its constructor's
options after colons, ``name:key=value[:key=value]`` (``tvm:prob=0.9:lamb=0.1``, ``jpeg:quality=50``),
so the CLI's comma lists can name configured baselines (``seed=none``: a fresh random draw each
call, see `is_randomized`).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from advkit.defenses.advfilter import AdvFilter, DefendedClassifier
from advkit.defenses.evaluate import evaluate_on_store, recovered_fraction, store_rows
from advkit.errors import UsageError

CLASSICAL_DEFENSES = ("jpeg", "smoothing", "bitdepth", "tvm", "gaussian")
#: Defenses named by a word rather than built from options or a checkpoint.
BUILTIN_DEFENSES = ("none", "advfilter", "pafilt")


def _classical_table() -> dict[str, type[nn.Module]]:
    from advkit.defenses import classical

    return {
        "jpeg": classical.JPEGDefense,
        "smoothing": classical.SmoothingDefense,
        "bitdepth": classical.BitDepthDefense,
        "tvm": classical.TVMDefense,
        "gaussian": classical.GaussianNoiseDefense,
    }


def _option_value(text: str) -> int | float | str | None:
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_defense_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value[:key=value]`` → (name, options) for a classical defense; other names unchanged.

    Raises `UsageError` for a malformed option or one its constructor does not take. Only the
    classical defenses take options: any other spec (a denoiser name or a checkpoint path, which may
    hold a colon) is returned whole with no options.
    """
    name, sep, rest = spec.partition(":")
    table = _classical_table()
    if not sep or name not in table:
        return spec, {}
    params = inspect.signature(table[name]).parameters
    options: dict[str, Any] = {}
    for item in rest.split(":"):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise UsageError(f"defense {spec!r}: options are key=value after a colon, got {item!r}")
        if key not in params:
            raise UsageError(f"defense {spec!r}: {name} has no option {key!r} (options: {', '.join(params)})")
        options[key] = _option_value(value)
    return name, options


def check_defense_spec(spec: str) -> None:
    """Fail now for a spec `create_defense` would refuse later: `UsageError` for a malformed option or
    an unknown name, `CheckpointError` for a checkpoint path that names no file."""
    name, _ = parse_defense_spec(spec)
    if name in BUILTIN_DEFENSES or name in CLASSICAL_DEFENSES:
        return
    from advkit.errors import UnknownNameError
    from advkit.models.checkpoint import resolve_checkpoint
    from advkit.zoo import list_denoisers, resolve_denoiser

    try:  # a path that names no file keeps its own "checkpoint not found" message
        resolve_checkpoint(resolve_denoiser(name))
    except UnknownNameError:
        known = ", ".join([*BUILTIN_DEFENSES, *CLASSICAL_DEFENSES, *list_denoisers()])
        raise UsageError(f"unknown defense {spec!r}; use one of {known} or a denoiser checkpoint path") from None


def create_defense(name: str, **kwargs: Any) -> nn.Module:
    """Build a defense by name or ``name:key=value`` spec (see the module docstring); ``kwargs`` go
    to its constructor and take precedence over the spec's options."""
    name, options = parse_defense_spec(name)
    kwargs = {**options, **kwargs}
    if name == "none":
        return nn.Identity()
    if name == "advfilter":
        return AdvFilter("default", **kwargs)
    if name == "pafilt":
        return AdvFilter("advfilter-cifar10-pafilt", **kwargs)
    table = _classical_table()
    if name in table:
        return table[name](**kwargs)
    return AdvFilter(name, **kwargs)


def is_differentiable(defense: nn.Module) -> bool:
    """False for defenses that fall back to BPDA gradients."""
    return bool(getattr(defense, "differentiable", True))


def is_randomized(defense: nn.Module) -> bool:
    """True for defenses that draw new randomness every call (attack them with EOT)."""
    return bool(getattr(defense, "randomized", False))


def gradient_kind(defense: nn.Module) -> str:
    """How an adaptive attack differentiates ``defense``: ``exact``, ``BPDA`` (identity backward)
    or ``BPDA (<stand-in>)`` (the gradient of a differentiable approximation)."""
    return str(getattr(defense, "gradient", "exact" if is_differentiable(defense) else "BPDA"))


__all__ = [
    "BUILTIN_DEFENSES",
    "CLASSICAL_DEFENSES",
    "AdvFilter",
    "DefendedClassifier",
    "check_defense_spec",
    "create_defense",
    "evaluate_on_store",
    "gradient_kind",
    "is_differentiable",
    "is_randomized",
    "parse_defense_spec",
    "recovered_fraction",
    "store_rows",
]

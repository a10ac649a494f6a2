"""Numeric precision policy (SPEC "Precision"): fp32 | tf32 | bf16 | auto.

``fp32`` is strict (TF32 off), ``tf32`` lets CUDA matmuls/convolutions use TF32, ``bf16`` runs the
model under bf16 autocast (inputs, perturbations and gradients w.r.t. them stay fp32). ``auto``
picks the fastest precision that the benchmark (``benchmarks/gen_adv.py``) measured to keep attack
success within 0.5 points of strict fp32 on this device, recorded in
``$ADVKIT_HOME/precision.json``; with no such record, and always on the CPU, it is fp32.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import torch

from advkit.errors import UsageError

PRECISIONS = ("fp32", "tf32", "bf16", "auto")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete precision for ``device``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    from advkit.models.weights import advkit_home

    record = advkit_home() / "precision.json"
    try:
        choices = json.loads(record.read_text())
    except (OSError, ValueError):  # (missing, not UTF-8, not JSON: measure again, run strict meanwhile)
        return "fp32"
    if not isinstance(choices, dict):
        return "fp32"
    choice = choices.get(torch.cuda.get_device_name(device))
    return choice if choice in ("fp32", "tf32", "bf16") else "fp32"


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed model calls in ``precision`` on ``device`` (restores the TF32 flags)."""
    check_precision(precision)
    if precision == "auto":
        precision = resolve_precision(precision, device)
    old_matmul = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_matmul
        torch.backends.cudnn.allow_tf32 = old_cudnn

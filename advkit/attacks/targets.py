"""Target classes for targeted attacks (``Attack(..., targeted=True)``).

The usual choices of torchattacks' targeted modes and of the targeted-attack literature: a random
class other than the true one, the class the model finds least likely, or a fixed shift of the label.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def _check_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).long()
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,), got shape {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"a target other than the label needs at least 2 classes, got {num_classes}")
    if labels.numel() and not bool(((labels >= 0) & (labels < num_classes)).all()):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min().item()}..{labels.max().item()}")
    return labels


def random_targets(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) int64: for each label a class drawn uniformly from the other ``num_classes − 1``.

    ``generator`` (a CPU generator) makes the draw reproducible; the result is on ``labels``' device.
    """
    labels = _check_labels(labels, num_classes)
    # a shift in 1..n-1 never lands on the label and is uniform over the other classes
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift).remainder(num_classes).to(labels.device)


def shifted_targets(labels: torch.Tensor, num_classes: int, shift: int = 1) -> torch.Tensor:
    """(B,) int64: ``(label + shift) mod num_classes`` (``shift`` not a multiple of the class count)."""
    labels = _check_labels(labels, num_classes)
    if shift % num_classes == 0:
        raise ValueError(f"shift {shift} maps every label to itself with {num_classes} classes")
    return (labels + shift).remainder(num_classes)


@torch.no_grad()
def least_likely_targets(model: nn.Module, images: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """(B,) int64: the class with the ``rank``-th smallest logit of ``model`` on ``images`` (rank 1:
    the least likely), the hardest target of Kurakin et al.'s iterative least-likely class method."""
    logits = model(images)
    if logits.ndim != 2:
        raise ValueError(f"the model must return (B, classes) logits, got shape {tuple(logits.shape)}")
    if not 1 <= rank <= logits.shape[1]:
        raise ValueError(f"rank must lie in 1..{logits.shape[1]}, got {rank}")
    return logits.float().topk(rank, dim=1, largest=False).indices[:, rank - 1]


def next_ranked_targets(
    clean_logits: torch.Tensor, n_targets: int, finished: torch.Tensor
) -> Iterator[torch.Tensor]:
    """(B,) int64 for k = 1..``n_targets``: each image's class with the k-th highest clean logit
    after the top one (AutoAttack's targets for APGD-T and FAB-T), stopping early once every entry
    of ``finished`` (B,) bool is True; the caller updates ``finished`` between yields."""
    ranked = clean_logits.argsort(dim=1, descending=True)
    for k in range(1, min(n_targets, clean_logits.shape[1] - 1) + 1):
        if bool(finished.all()):
            return
        yield ranked[:, k]

"""The nearest linearized decision boundary, shared by the minimum-norm attacks (FAB, DeepFool)."""

from __future__ import annotations

import math

import torch


def nearest_boundary(
    x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None,
    dual_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first-order nearest boundary f_l − f_y = 0 at ``x``, per image.

    Args:
        x: (B, C, H, W) leaf requiring grad; logits: (B, K) computed from ``x`` (graph kept).
        labels: (B,) true classes y. targets: (B,) the class l of each image's boundary, or None for
            the nearest of all other classes by |f_l − f_y| / ‖∇(f_l − f_y)‖_p (``dual_p``: the dual
            of the attack's norm: 1 for L∞, 2 for L2), one backward per class.
    Returns: (f_l − f_y) (B,) and its gradient ∇(f_l − f_y) (B, C, H, W), both detached.
    """
    rows = torch.arange(x.shape[0], device=x.device)
    if targets is not None:
        gap = logits[rows, targets] - logits[rows, labels]
        (grad,) = torch.autograd.grad(gap.sum(), x)
        return gap.detach(), grad
    # One backward per class keeps memory at one gradient batch (AutoAttack stores all K).
    (grad_true,) = torch.autograd.grad(logits[rows, labels].sum(), x, retain_graph=True)
    best_dist = torch.full((x.shape[0],), math.inf, device=x.device)
    best_gap, best_grad = torch.zeros_like(best_dist), torch.zeros_like(x)
    classes = logits.shape[1]
    for c in range(classes):
        (grad_c,) = torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < classes - 1)
        diff = grad_c - grad_true
        gap = (logits[:, c] - logits[rows, labels]).detach()
        dist = gap.abs() / (diff.flatten(1).norm(p=dual_p, dim=1) + 1e-12)
        nearer = (dist < best_dist) & (labels != c)
        best_dist = torch.where(nearer, dist, best_dist)
        best_gap = torch.where(nearer, gap, best_gap)
        best_grad[nearer] = diff[nearer]
    return best_gap, best_grad

"""Oblivious evaluation of a denoiser on a pair store: accuracy and image quality per radius."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.data.store import PairStore
from advkit.metrics import psnr


def store_rows(store: PairStore, limit_per_eps: int | None = None) -> np.ndarray:
    """Done rows of a store, at most ``limit_per_eps`` per radius (the first ones, in row order)."""
    done = store.field("done")
    if limit_per_eps is None:
        return np.flatnonzero(done)
    eps = store.field("eps")
    rows = [np.flatnonzero(done & (eps == e))[:limit_per_eps] for e in np.unique(eps)]
    return np.sort(np.concatenate(rows))


@torch.no_grad()
def evaluate_on_store(
    defense: Callable[[torch.Tensor], torch.Tensor] | None,
    classifier: nn.Module,
    store: PairStore,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    include_clean: bool = True,
    draws: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Accuracy of ``classifier ∘ defense`` on the store's adversarial images, per radius.

    Args:
        defense: [0, 1] (B, 3, H, W) → [0, 1] images, or None for the bare classifier.
        rows: store rows to use (default: all done rows).
        include_clean: also evaluate the clean images (as eps = 0; each distinct source image once).
        draws: for a randomized defense, how many times each image is defended and classified:
            ``acc_defended`` is then the mean over the draws, and ``acc_defended_all_draws`` (only
            with draws > 1) the share of images classified correctly under every draw.

    Returns: ``{"per_eps": [{"eps", "n", "acc_attacked", "acc_defended", "psnr_attacked",
    "psnr_defended"}, ...]}`` with eps = 0 first when ``include_clean``; accuracies are computed
    against the stored labels (rows without a label are skipped for accuracy); PSNR of the
    defended image is that of the first draw.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    device = torch.device(device)
    rows = np.flatnonzero(store.field("done")) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    labels_all = store.field("label")
    eps_all = store.field("eps")
    src_all = store.field("source_index")
    groups: dict[float, list[np.ndarray]] = {}
    if include_clean:
        _, first = np.unique(src_all[rows], return_index=True)
        groups[0.0] = [rows[np.sort(first)]]
    for e in np.unique(eps_all[rows]):
        groups[float(e)] = [rows[eps_all[rows] == e]]
    total = sum(len(g[0]) for g in groups.values())
    done = 0
    per_eps = []
    for e, (sel,) in sorted(groups.items()):
        correct_att = correct_def = all_draws = counted = 0
        psnr_att: list[torch.Tensor] = []
        psnr_def: list[torch.Tensor] = []
        for start in range(0, len(sel), batch_size):
            chunk = sel[start : start + batch_size]
            clean, adv = store.images(chunk)
            x = clean if e == 0.0 else adv
            x, clean = x.to(device), clean.to(device)
            y = torch.from_numpy(labels_all[chunk]).to(device)
            out = defense(x).clamp(0, 1) if defense is not None else x
            known = y >= 0
            correct_att += int((classifier(x).argmax(1) == y)[known].sum())
            hits = torch.zeros_like(y)
            every = torch.ones_like(y, dtype=torch.bool)
            for k in range(draws):  # a randomized defense draws anew each call
                defended = out if k == 0 else (defense(x).clamp(0, 1) if defense is not None else x)
                hit = classifier(defended).argmax(1) == y
                hits += hit
                every &= hit
            correct_def += int(hits[known].sum())
            all_draws += int(every[known].sum())
            counted += int(known.sum())
            psnr_def.append(psnr(out.float(), clean).cpu())
            if e != 0.0:
                psnr_att.append(psnr(x.float(), clean).cpu())
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
        row: dict[str, Any] = {"eps": e, "n": len(sel)}
        if counted:
            row["acc_attacked"] = correct_att / counted
            row["acc_defended"] = correct_def / (counted * draws)
            if draws > 1:
                row["acc_defended_all_draws"] = all_draws / counted
        row["psnr_defended"] = _finite_mean(torch.cat(psnr_def))
        if psnr_att:
            row["psnr_attacked"] = _finite_mean(torch.cat(psnr_att))
        per_eps.append(row)
    return {"per_eps": per_eps}


def _finite_mean(values: torch.Tensor) -> float:
    """Mean PSNR over images, with identical images (inf dB) capped at 100 dB."""
    return float(values.clamp(max=100.0).mean())


def recovered_fraction(clean: float, attacked: float, defended: float) -> float | None:
    """(defended − attacked) / (clean − attacked): the share of the attack's damage undone."""
    gap = clean - attacked
    return None if gap <= 0 else (defended - attacked) / gap

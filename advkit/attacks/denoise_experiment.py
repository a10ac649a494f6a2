"""Run the adversarial denoise experiment over a dataset and write its stores (behind ``advkit attack-denoise``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.attacks.denoise_attack import METHODS, image_quality, noisy_inputs, run_method, summarize
from advkit.attacks.edges import CannyEdges, SobelEdges
from advkit.attacks.pasadena import VARIANTS, Pasadena, check_options
from advkit.data.images import IMAGE_EXTENSIONS, write_png
from advkit.data.sources import labels_for_model, open_source, select_indices
from advkit.data.store import STORE_SUFFIXES, PairStoreWriter, quantize_delta, reconstruct_adv
from advkit.errors import OutputExistsError, UsageError
from advkit.models import create_classifier, get_model_spec
from advkit.models.classifier import strict_fp32_predictions
from advkit.utils import atomic_path, check_output_dir, cleaned_up_on_failure, parse_float_list, split_list

# suffixes that name a single file, never the output folder
OTHER_FILE_SUFFIXES = frozenset({".txt", ".json", ".csv", ".npz", ".npy", ".pt", ".pth", ".safetensors"})


def run_attack_denoise(
    *, data: str, model: str, out: Path, denoiser: str, methods: str, variant: str, lam: float, theta: float,
    steps: int | None, alpha: float, kernel_step: float, edges: str, canny_width: int, gaussian: bool, eps: str,
    loss: str | None = None, refine: int | None = None, confidence: float = 0.0, diversity: float = 0.0,
    sigma: float, transfer_to: str | None, per_class: int | None, limit: int | None, batch_size: int,
    save_png: bool, overwrite: bool, device: torch.device, seed: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    method_list = split_list(methods)
    for m in method_list:
        if m not in METHODS:
            raise UsageError(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    if variant not in VARIANTS:
        raise UsageError(f"unknown --variant {variant!r}; use {' or '.join(VARIANTS)}")
    try:
        check_options(variant, loss, refine, confidence, diversity, prefix="--")
    except ValueError as e:
        raise UsageError(str(e)) from None
    (eps_value,) = parse_float_list(eps, "eps")[:1]
    if not 0 < eps_value <= 1:
        raise UsageError(f"--eps {eps_value:g} is out of range (0, 1]")
    if not 0 <= sigma <= 1:
        raise UsageError(f"--sigma {sigma:g} is out of range [0, 1]")
    if not 0 <= lam <= 1:
        raise UsageError(f"--lam {lam:g} is out of range [0, 1]")
    to_folder = out.suffix.lower() not in STORE_SUFFIXES
    if to_folder and (out.is_file() or out.suffix.lower() in IMAGE_EXTENSIONS | OTHER_FILE_SUFFIXES):
        # a name like ad.txt or ad.png would otherwise become a folder of stores under a file's name
        raise UsageError(f"--out {out}: give a pair store (*.h5) or a folder")
    if save_png and not to_folder:
        raise UsageError("--save-png needs --out to be a folder")
    if out.exists() and not overwrite and (not to_folder or any(out.iterdir())):
        raise OutputExistsError(f"{out} exists; use --overwrite to replace it")
    check_output_dir(out)

    classifier = create_classifier(model).to(device)
    for p in classifier.parameters():
        p.requires_grad_(False)
    targets = {}
    for name in split_list(transfer_to):
        targets[name] = create_classifier(name).to(device).eval()
    kpn = None
    if not gaussian or any(m.startswith("denoise") for m in method_list):
        from advkit.defenses import AdvFilter

        kpn_filter = AdvFilter(denoiser)
        if kpn_filter.arch != "kpn":
            raise UsageError(f"--denoiser must be a KPN checkpoint (G = 1); {denoiser} is {kpn_filter.arch}")
        kpn = kpn_filter.denoiser.to(device)
    if edges not in ("sobel", "canny"):
        raise UsageError(f"unknown --edges {edges!r}; use sobel or canny")
    try:  # the constructors check their own arguments; here a bad one is the user's option
        edge_model = CannyEdges(width=canny_width) if edges == "canny" else SobelEdges()
        attack = Pasadena(classifier, "gaussian" if gaussian else kpn, edge_model, lam=lam, theta=theta,
                          steps=steps, alpha=alpha, kernel_step=kernel_step, variant=variant, loss=loss,
                          refine=refine, confidence=confidence, diversity=diversity, seed=seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    source = open_source(data, image_size=get_model_spec(model).input_size)
    labels_all, _ = labels_for_model(source, classifier.class_names, classifier.num_classes, model)
    indices = select_indices(labels_all, per_class=per_class, limit=limit)
    if len(indices) == 0:
        raise UsageError("the selection is empty")
    outputs: dict[str, list[torch.Tensor]] = {m: [] for m in method_list}
    cleans, noisys, labels = [], [], []
    total = len(indices) * len(method_list)
    done = 0
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        clean = torch.from_numpy(source.load(idx)).permute(0, 3, 1, 2).float().div(255).to(device)
        noisy = noisy_inputs(clean, idx, sigma, seed)
        cleans.append(clean.cpu())
        noisys.append(noisy.cpu())
        labels.append(torch.from_numpy(labels_all[idx]))
        for m in method_list:
            outputs[m].append(run_method(m, noisy, classifier, kpn=kpn, pasadena=attack, eps=eps_value,
                                         seed=seed).detach().cpu())
            done += len(idx)
            if on_progress:
                on_progress(done, total)
    clean_t, noisy_t, label_t = torch.cat(cleans), torch.cat(noisys), torch.cat(labels)
    classifier, targets = classifier.cpu(), {k: v.cpu() for k, v in targets.items()}
    result: dict[str, Any] = {
        "data": data, "model": classifier.identity, "n": len(indices), "sigma": sigma, "seed": seed,
        "pasadena": attack.config() if "pasadena" in method_list else None, "baseline_eps": eps_value,
        "noisy": {k: float(np.nanmean(v)) for k, v in image_quality(noisy_t, clean_t).items()},
        "methods": {},
    }
    with cleaned_up_on_failure(out if to_folder else out.parent):
        for m in method_list:
            out_t = torch.cat(outputs[m])
            result["methods"][m] = summarize(out_t, noisy_t, clean_t, label_t, classifier, targets)
            _write_store(out / f"{m}.h5" if to_folder else out, out_t, noisy_t, label_t, indices, classifier, m,
                         result, sigma, seed)
            if save_png:
                for k, src_idx in enumerate(indices):
                    write_png(out / m / f"{int(src_idx):06d}.png", out_t[k])
        if save_png:
            for k, src_idx in enumerate(indices):
                write_png(out / "noisy" / f"{int(src_idx):06d}.png", noisy_t[k])
        if to_folder:
            with atomic_path(out / "results.json") as tmp:
                tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _write_store(path: Path, outputs: torch.Tensor, noisy: torch.Tensor, labels: torch.Tensor, indices: np.ndarray,
                 classifier: torch.nn.Module, method: str, result: dict[str, Any], sigma: float, seed: int) -> None:
    """A pair store whose ``clean`` is the (8-bit) noisy input and whose adv is the method's output."""
    noisy_u8 = noisy.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    delta = quantize_delta((outputs - noisy).permute(0, 2, 3, 1)).numpy()
    # the predictions of the images as stored (8-bit input, float16 difference), as gen-adv's
    pred_noisy = strict_fp32_predictions(classifier, reconstruct_adv(noisy_u8, np.zeros_like(delta))).numpy()
    pred_out = strict_fp32_predictions(classifier, reconstruct_adv(noisy_u8, delta)).numpy()
    with atomic_path(path, suffix=".h5.partial") as tmp:
        w = PairStoreWriter.create(
            tmp, rows=len(outputs), image_shape=tuple(noisy_u8.shape[1:]),  # type: ignore[arg-type]
            source={"data": result["data"], "noise_sigma": sigma, "noise_seed": seed}, model=result["model"],
            attack={"method": method, "pasadena": result["pasadena"] if method == "pasadena" else None,
                    "eps": result["baseline_eps"] if method not in ("pasadena", "denoise") else None},
            seed=seed, class_names=getattr(classifier, "class_names", None), precision="fp32",
            config={"method": method}, extra_attrs={"clean_is": "noisy input"},
        )
        try:
            w.write_rows(0, clean=noisy_u8, delta=delta, label=labels.numpy().astype(np.int64),
                         eps=np.full(len(outputs), sigma, np.float32), source_index=np.asarray(indices, np.int64),
                         pred_clean=pred_noisy.astype(np.int64), pred_adv=pred_out.astype(np.int64))
            w.finish()
        finally:
            w.close()

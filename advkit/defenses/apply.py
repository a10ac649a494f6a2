"""Applying a defense to files: one image, a folder of images, or a pair store.

Outputs are written atomically (temporary file, then rename): an interrupted run leaves either
the previous file or nothing under each output name, never a half-written one.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.data.images import IMAGE_EXTENSIONS, read_image, write_png
from advkit.data.store import (
    STORE_SUFFIXES,
    PairStore,
    PairStoreWriter,
    check_store_name,
    images_from_raw,
    quantize_delta,
    reconstruct_adv,
)
from advkit.defenses.advfilter import AdvFilter
from advkit.errors import AdvkitError, DataSourceError, ImageReadError, OutputError, OutputExistsError, UsageError
from advkit.models.classifier import strict_fp32_predictions
from advkit.utils import atomic_path, check_output_dir, cleaned_up_on_failure


def check_uncertainty_request(advfilter: AdvFilter, src: str | os.PathLike[str]) -> None:
    """`UsageError` unless a fusion-weight map can be written: a PA-Filt denoiser and one image file."""
    if advfilter.arch != "pafilt":
        raise UsageError(f"--save-uncertainty needs a PA-Filt denoiser; this one is {advfilter.arch}")
    if names_bundled_sample(src) or Path(src).is_dir() or Path(src).suffix.lower() in STORE_SUFFIXES:
        raise UsageError(f"--save-uncertainty writes the map of one image; {src} is not an image file")


def defend_image_file(
    advfilter: AdvFilter,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    tile: int = 512,
    save_uncertainty: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Denoise one image file into a lossless PNG. Returns sizes and, for PA-Filt, the mean weight."""
    if save_uncertainty is not None:
        check_uncertainty_request(advfilter, src)
    image = read_image(src).unsqueeze(0).to(device)
    parts = advfilter.denoise_large(image, tile=tile, with_parts=save_uncertainty is not None)
    write_png(dst, parts["out"][0])
    info: dict[str, Any] = {"input": str(src), "output": str(dst), "size": list(image.shape[-2:])}
    if save_uncertainty is not None:
        weight = parts["weight"][0].expand(3, -1, -1)
        write_png(save_uncertainty, weight)
        info["uncertainty"] = str(save_uncertainty)
        info["mean_weight_sl"] = float(parts["weight"].mean())
    return info


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` as an image-folder source lists them (`scan_images`)."""
    from advkit.data.sources import scan_images

    files = scan_images(folder)
    if not files:
        raise DataSourceError(f"{folder}: no image files found")
    return files


def defend_folder(
    advfilter: AdvFilter,
    src: Path,
    dst: Path,
    *,
    device: torch.device | str = "cpu",
    tile: int = 512,
    on_progress: Callable[[int, int], None] | None = None,
    files: list[Path] | None = None,
) -> dict[str, Any]:
    """Denoise every image under ``src`` (or the given ``files`` in it) into ``dst`` as PNG, mirroring
    paths (see `output_names`). A file that cannot be read stops the run with one line saying how
    many images were written; those stay, each whole."""
    files = list_images(src) if files is None else files
    outputs = output_names(files, src, dst)
    with cleaned_up_on_failure(dst):
        for i, (f, out) in enumerate(zip(files, outputs)):
            try:
                defend_image_file(advfilter, f, out, device=device, tile=tile)
            except AdvkitError as exc:
                raise type(exc)(f"{exc} (stopped at image {i + 1} of {len(files)}; {i} written to {dst})") from exc
            if on_progress:
                on_progress(i + 1, len(files))
    return {"input": str(src), "output": str(dst), "images": len(files)}


def output_names(files: list[Path], src: Path, dst: Path) -> list[Path]:
    """The PNG each of ``files`` (under ``src``) is written to under ``dst``: the same relative path
    with the suffix ``.png``, except where two inputs would meet in one output (``a.jpg`` and
    ``a.png``): then each keeps its full name plus ``.png`` (``a.jpg.png``), the one already named
    so keeping it, and no image overwrites another."""
    mirrored = [dst / f.relative_to(src) for f in files]
    plain = [m.with_suffix(".png") for m in mirrored]
    count = collections.Counter(plain)
    names = [p if count[p] == 1 or m == p else m.with_name(m.name + ".png") for m, p in zip(mirrored, plain)]
    clash = [n for n, k in collections.Counter(names).items() if k > 1]
    if clash:  # (a.jpg beside a.png and a file named a.jpg.png)
        raise OutputError(f"two inputs would be written to {clash[0]}; rename one of them")
    return names


@torch.no_grad()
def defend_store(
    advfilter: AdvFilter,
    src: Path,
    dst: Path,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    classifier: torch.nn.Module | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Denoise every adversarial image of a pair store into a new pair store.

    The output keeps each row's clean image, label, eps and source index; its ``delta`` is
    (defended − clean), so its "adv" images are the defended ones, and its ``pred_adv`` is the
    classifier's prediction on them (−1 without a classifier). The ``defense`` attribute records
    the denoiser.
    """
    with PairStore(src, require_complete=True) as store:
        info = store.info
        rows = store.info.rows
        defense_record = {"source": advfilter.source, "config": advfilter.record.get("config")}
        with atomic_path(dst, suffix=".h5.partial") as tmp:
            writer = PairStoreWriter.create(
                tmp, rows=rows, image_shape=info.image_shape, source=info.source, model=info.model,
                attack=info.attack, seed=info.seed, class_names=info.class_names, precision=info.precision,
                config={"defended_from": str(src), "defense": defense_record},
                extra_attrs={"defense": json.dumps(defense_record, sort_keys=True, default=str)},
            )
            try:
                label, eps = store.field("label"), store.field("eps")
                src_idx, pred_clean = store.field("source_index"), store.field("pred_clean")
                for start in range(0, rows, batch_size):
                    stop = min(start + batch_size, rows)
                    clean_u8, delta_in = store.raw(slice(start, stop))
                    clean, adv = images_from_raw(clean_u8, delta_in)
                    out = advfilter(adv.to(device)).cpu()
                    delta = quantize_delta((out - clean).permute(0, 2, 3, 1))
                    # the prediction of the image as stored (float16 difference), as gen-adv's
                    stored = reconstruct_adv(clean_u8, delta.numpy()).to(device)
                    pred = (strict_fp32_predictions(classifier, stored).cpu().numpy() if classifier is not None
                            else np.full(stop - start, -1, np.int64))
                    writer.write_rows(
                        start, clean=clean_u8, delta=delta.numpy(), label=label[start:stop], eps=eps[start:stop],
                        source_index=src_idx[start:stop], pred_clean=pred_clean[start:stop], pred_adv=pred,
                    )
                    if on_progress:
                        on_progress(stop, rows)
                writer.finish()
            finally:
                writer.close()
    with PairStore(dst) as out_store:
        return out_store.summary()


def _refuse_input_as_output(src: Path, dst: Path) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"{dst} is the input; defend writes its output beside it, not over it")


def _refuse_file_name_for_folder(dst: Path, why: str) -> None:
    """A folder's outputs go to a folder: one named like a file (out.png) is refused, not made."""
    if not dst.is_dir() and dst.suffix.lower() in IMAGE_EXTENSIONS.union(STORE_SUFFIXES):
        raise OutputError(f"{dst}: {why}; give an output folder, not a file name")


def names_bundled_sample(src: str | os.PathLike[str]) -> bool:
    """The word ``sample`` (a string, as `advkit.data.open_source` takes it) means the bundled
    sample photos; a folder of that name is ``./sample`` (or a `Path`)."""
    return isinstance(src, str) and src.strip().lower() == "sample"


def defend_path(
    advfilter: AdvFilter,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    tile: int = 512,
    batch_size: int = 128,
    overwrite: bool = True,
    save_uncertainty: str | os.PathLike[str] | None = None,
    classifier: torch.nn.Module | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Dispatch on what ``src`` is: an image file, a folder of images, or a pair store (.h5)."""
    if save_uncertainty is not None:
        # Refused before anything is written: the map is PA-Filt's, of one image.
        check_uncertainty_request(advfilter, src)
    if names_bundled_sample(src):
        # The bundled sample (scikit-image's photos): denoise them all into the folder dst.
        from advkit.data.sources import open_source

        sample = open_source("sample")
        dst = Path(dst)
        check_output_dir(dst)
        _refuse_file_name_for_folder(dst, "the sample is a folder of photos")
        return defend_folder(advfilter, sample.root, dst, device=device, tile=tile, on_progress=on_progress,
                             files=sample.files)
    names_folder = str(dst).endswith(("/", os.sep))  # "out/" names a folder, made if missing
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ImageReadError(f"input not found: {src}")
    check_output_dir(dst)
    _refuse_input_as_output(src, dst)
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"{dst} exists and is not a folder (the input is a folder)")
        _refuse_file_name_for_folder(dst, "the input is a folder")
        return defend_folder(advfilter, src, dst, device=device, tile=tile, on_progress=on_progress)
    if src.suffix.lower() in STORE_SUFFIXES:
        check_store_name(dst, "defend output")
        if dst.exists() and not overwrite:
            raise OutputExistsError(f"{dst} exists; use --overwrite to replace it")
        return defend_store(advfilter, src, dst, device=device, batch_size=batch_size, classifier=classifier,
                            on_progress=on_progress)
    if dst.is_dir() or names_folder:
        dst = dst / (src.stem + ".png")
    # A lossless PNG under another name (out.jpg) would mislabel the file for every later reader.
    for path in (dst, save_uncertainty):
        if path is not None and Path(path).suffix.lower() != ".png":
            raise OutputError(f"{path}: defend writes lossless PNG; name the output *.png or give a folder")
    if save_uncertainty is not None:
        check_output_dir(save_uncertainty)
        if Path(save_uncertainty).resolve() == dst.resolve():
            raise UsageError(f"--save-uncertainty {save_uncertainty} is the denoised image's output too")
    _refuse_input_as_output(src, dst)  # (again: "defend a.png ." names ./a.png)
    return defend_image_file(advfilter, src, dst, device=device, tile=tile, save_uncertainty=save_uncertainty)

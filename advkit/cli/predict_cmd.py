"""``advkit predict``: classify image files, or images of a dataset source, with a registered model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from advkit.cli._common import DeviceOption, JsonOption, device_of, emit, get_options, progress_bar
from advkit.errors import ImageReadError, UsageError

if TYPE_CHECKING:  # torch, torchvision and h5py load when the command runs, not with `advkit --help`
    import numpy as np
    import torch

    from advkit.data.sources import ImageSource
    from advkit.models import Classifier


def _read_files(files: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Every file decoded and brought to ``size`` up front, so a bad file fails before any work."""
    import numpy as np

    from advkit.data.images import read_image_uint8, resize_center_crop

    for f in files:
        if not f.exists():
            raise ImageReadError(f"cannot read image {f}: no such file")
        if f.is_dir():
            raise ImageReadError(f"cannot read image {f}: it is a folder (use --data {f} for a folder of images)")
    return np.stack([resize_center_crop(read_image_uint8(f), size) for f in files])


def _array_batches(
    keys: list[str], images: np.ndarray, batch_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    for start in range(0, len(keys), batch_size):
        yield keys[start : start + batch_size], images[start : start + batch_size]


def _source_batches(
    source: ImageSource, indices: np.ndarray, batch_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    from advkit.data.sources import iter_batches

    for chunk, images in iter_batches(source, indices, batch_size):
        yield source.keys(chunk), images


def _classify(clf: Classifier, images: np.ndarray, device: torch.device, k: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from advkit.data.images import from_uint8_hwc

    with torch.inference_mode():
        logits = clf(from_uint8_hwc(images).to(device))
        top = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
    return top.values.cpu().numpy(), top.indices.cpu().numpy()


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        ctx: typer.Context,
        model: Annotated[
            str, typer.Option("--model", "-m", help="Registered classifier (see `advkit models`).", show_default=False)
        ],
        inputs: Annotated[
            list[Path] | None, typer.Argument(help="Image files (PNG, JPEG, ...) to classify.", show_default=False)
        ] = None,
        weights: Annotated[
            Path | None, typer.Option("--weights", help="Weights file (default: the registry's search).")
        ] = None,
        top_k: Annotated[int, typer.Option("--top-k", help="How many classes to list per image.")] = 5,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 64,
        data: Annotated[
            str | None,
            typer.Option("--data", help="A dataset source instead of files: 'sample', a .npz, a folder, ..."),
        ] = None,
        limit: Annotated[int | None, typer.Option("--limit", help="With --data: at most N images.")] = None,
        per_class: Annotated[
            int | None, typer.Option("--per-class", help="With --data: the first N images of each class.")
        ] = None,
        classes: Annotated[
            str | None, typer.Option("--classes", help="With --data: only these classes (names or indices, comma-separated).")
        ] = None,
        device: DeviceOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Classify images and print each one's top-1 class, its probability and the top-k.

        Every image is resized and center-cropped to the model's input size (short side to
        size·256/224, then the central crop; images already that size are used as they are).
        With --data and a labelled source, the accuracy is reported too.
        """
        import numpy as np

        from advkit.data.sources import labels_for_model, open_source, resolve_classes, select_indices
        from advkit.models import create_classifier, get_model_spec

        opts = get_options(ctx, json=json_out, device=device)
        files = list(inputs or [])
        if files and data is not None:
            raise UsageError("give image files or --data, not both")
        if not files and data is None:
            raise UsageError("nothing to classify: give image files, or --data SPEC (e.g. --data sample)")
        if data is None and (limit is not None or per_class is not None or classes is not None):
            raise UsageError("--limit, --per-class and --classes select from --data; they need --data")
        if top_k < 1:
            raise UsageError(f"--top-k must be ≥ 1, got {top_k}")
        if batch_size < 1:
            raise UsageError(f"--batch-size must be ≥ 1, got {batch_size}")
        spec = get_model_spec(model)  # an unknown name fails before any file is touched

        source: ImageSource | None = None
        labels: np.ndarray | None = None
        if data is not None:
            source = open_source(data, image_size=spec.input_size)
            wanted = resolve_classes(classes, source.class_names) if classes is not None else None
            indices = select_indices(source.labels(), classes=wanted, per_class=per_class, limit=limit)
            if len(indices) == 0:
                raise UsageError("nothing to classify: the selection from --data is empty")
            try:  # the labels as the model's class indices; none where the two cannot be matched
                labels = labels_for_model(source, spec.class_names(), spec.num_classes, model)[0][indices]
            except UsageError as exc:  # predictions still mean something; say why there is no accuracy
                warnings.warn(f"no accuracy: {exc}", stacklevel=1)
                labels = None
            total = len(indices)
            batches = _source_batches(source, indices, batch_size)
        else:
            total = len(files)
            batches = _array_batches([str(f) for f in files], _read_files(files, spec.input_size), batch_size)

        dev = device_of(opts)
        clf = create_classifier(model, weights).to(dev)
        names = clf.class_names or [str(i) for i in range(clf.num_classes or 0)]
        k = min(top_k, clf.num_classes or top_k)

        rows: list[dict[str, Any]] = []
        with progress_bar(opts, f"predict {model}") as on_progress:
            on_progress(0, total)
            for keys, images in batches:
                probs, classes_idx = _classify(clf, images, dev, k)
                for key, p, c in zip(keys, probs, classes_idx):
                    topk = [{"index": int(ci), "name": names[ci], "prob": float(pi)} for pi, ci in zip(p, c)]
                    rows.append({"input": key, "top1": topk[0]["name"], "index": topk[0]["index"],
                                 "prob": topk[0]["prob"], "topk": topk})  # fmt: skip
                on_progress(len(rows), total)

        result: dict[str, Any] = {
            "model": clf.identity,
            "input_size": list(spec.input_size),
            "source": source.describe() if source is not None else None,
            "predictions": rows,
        }
        # Accuracy only where the source's labels could be put in the model's label space.
        if labels is not None and (labels >= 0).any():
            for row, label in zip(rows, labels):
                row["label"] = int(label) if label >= 0 else None
            known = labels >= 0
            hits = np.array([r["index"] for r in rows]) == labels
            result["num_labelled"] = int(known.sum())
            result["accuracy"] = float(hits[known].mean())

        def render(console) -> None:  # noqa: ANN001
            has_labels = "accuracy" in result
            table = Table(
                Column("input", overflow="fold"), "top-1", "prob", f"top-{k}", *(["label"] if has_labels else [])
            )
            for r in rows:
                topk_text = ", ".join(f"{t['name']} {t['prob']:.3f}" for t in r["topk"])
                extra = []
                if has_labels:
                    label = r.get("label")
                    extra = ["" if label is None else f"{names[label]}{' ✓' if label == r['index'] else ''}"]
                table.add_row(r["input"], r["top1"], f"{r['prob']:.3f}", topk_text, *extra)
            console.print(table)
            if has_labels:
                console.print(
                    f"accuracy {result['accuracy'] * 100:.2f}% on {result['num_labelled']} labelled images ({clf.identity})"
                )

        emit(opts, result, render)

"""``advkit models``: the classifier registry and where each model's weights come from."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from advkit.cli._common import JsonOption, emit, get_options


def weights_status(name: str) -> str:
    """Where ``create_classifier(name)`` would take weights from, without loading them."""
    from advkit.models import find_weights, get_model_spec

    path = find_weights(name)
    if path is not None:
        return str(path)
    spec = get_model_spec(name)
    if spec.download is not None:
        import torch
        import torchvision

        url = torchvision.models.get_model_weights(name).DEFAULT.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        return str(cached) if cached.is_file() else "download on first use"
    return "missing"


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        ctx: typer.Context,
        dataset: str = typer.Option(None, help="Only models for this dataset (cifar10, imagenet)."),
        json_out: JsonOption = False,
    ) -> None:
        """List the registered classifiers: dataset, input size, and whether weights are found."""
        from advkit.models import get_model_spec, list_models

        opts = get_options(ctx, json=json_out)
        datasets = sorted({get_model_spec(n).dataset for n in list_models()})
        if dataset is not None and dataset not in datasets:
            from advkit.errors import UsageError

            raise UsageError(f"unknown --dataset {dataset!r}; registered: {', '.join(datasets)}")
        rows = []
        for name in list_models(dataset=dataset):
            spec = get_model_spec(name)
            rows.append(
                {
                    "name": name,
                    "dataset": spec.dataset,
                    "input_size": list(spec.input_size),
                    "classes": spec.num_classes,
                    "weights": weights_status(name),
                }
            )

        def render(console) -> None:  # noqa: ANN001
            table = Table("name", "dataset", "input", "classes", "weights")
            for r in rows:
                table.add_row(
                    r["name"], r["dataset"], "×".join(map(str, r["input_size"])), str(r["classes"]), r["weights"]
                )
            console.print(table)

        emit(opts, {"models": rows}, render)

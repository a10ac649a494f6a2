"""``advkit store info|verify|merge``: inspect, check and join pair stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import JsonOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="Inspect and merge HDF5 pair stores.", no_args_is_help=True)

    @store_app.command("info")
    def info(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(help="A pair store (.h5).")],
        json_out: JsonOption = False,
    ) -> None:
        """Shape, eps grid, model, attack, rows done, accuracy before/after per radius."""
        from advkit.cli.gen_adv_cmd import _render_summary
        from advkit.data.store import PairStore

        opts = get_options(ctx, json=json_out)
        with PairStore(path) as store:
            summary = store.summary()

        def render(console) -> None:  # noqa: ANN001
            _render_summary(console, summary)
            attack = summary["attack"]
            console.print(f"attack: {attack}")
            console.print(f"source: {summary['source'].get('spec', summary['source'])}  seed: {summary['seed']}  "
                          f"complete: {summary['complete']}")

        emit(opts, summary, render)

    @store_app.command("verify")
    def verify(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(help="A pair store (.h5).")],
        predictions: Annotated[
            bool, typer.Option("--predictions", help="Also re-run the store's model on every stored image.")
        ] = False,
        weights: Annotated[
            Path | None, typer.Option("--weights", help="Weights file for --predictions (default: the registry's search).")
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows read per batch.")] = 1024,
        json_out: JsonOption = False,
    ) -> None:
        """Read every row and check it: chunks that do not decompress, NaN or inf, perturbations outside
        their L∞ ball or images off [0, 1], labels and predictions out of range.

        `store info` reads only the layout, so damage inside a chunk shows only here (or when a
        command reads that row). With --predictions the store's model (its weights checked against
        the recorded hash) re-classifies every stored image, which must give the stored prediction.
        The report goes to stdout; a store with problems ends with a one-line error and exit code 1.
        """
        from advkit.data.store import PairStore
        from advkit.errors import StoreFormatError, UsageError

        opts = get_options(ctx, json=json_out)
        if batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
        with PairStore(path) as store:
            classifier = None
            if predictions:
                classifier = _store_classifier(store.info.model, weights)
            with progress_bar(opts, "verify", unit="row") as progress:
                report = store.verify(classifier=classifier, batch_rows=batch_size, device=device_of(opts),
                                      on_progress=progress)

        def render(console) -> None:  # noqa: ANN001
            console.print(f"{report['path']}: {report['rows_done']}/{report['rows']} rows done, "
                          f"checked {', '.join(report['checked'])}")
            for check, found in report["problems"].items():
                console.print(f"  {check}: {found['rows']} rows (first: {', '.join(map(str, found['first']))})")
            if report["ok"]:
                console.print("ok")

        emit(opts, report, render)
        if not report["ok"]:
            counts = ", ".join(f"{found['rows']} {check}" for check, found in report["problems"].items())
            raise StoreFormatError(f"{path} failed verification: {counts} (rows in the report)")

    @store_app.command("merge")
    def merge(
        ctx: typer.Context,
        out: Annotated[Path, typer.Argument(help="The merged store to write.")],
        shards: Annotated[list[Path], typer.Argument(help="The shard stores (i/n, any order).")],
        virtual: Annotated[
            bool, typer.Option("--virtual", help="Write an HDF5 virtual dataset over the shards instead of copying.")
        ] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
        json_out: JsonOption = False,
    ) -> None:
        """Join the shards of one `gen-adv --shard i/n` run into one store."""
        from advkit.cli.gen_adv_cmd import _render_summary
        from advkit.data.store import check_store_name, merge_stores
        from advkit.errors import OutputExistsError

        opts = get_options(ctx, json=json_out)
        check_store_name(out, "merge output")
        if out.exists() and not overwrite:
            raise OutputExistsError(f"{out} exists; use --overwrite to replace it")
        summary = merge_stores(out, shards, virtual=virtual)
        emit(opts, summary, lambda console: _render_summary(console, summary))

    app.add_typer(store_app, name="store")


def _store_classifier(model_id: str, weights: Path | None):  # noqa: ANN202
    """The store's classifier (``name@sha256:HEX``), refused when its weights are not the ones
    the store recorded."""
    from advkit.errors import CheckpointError, UsageError
    from advkit.models import create_classifier, list_models

    name, _, recorded = model_id.partition("@sha256:")
    if name not in list_models():
        raise UsageError(f"the store's model {name!r} is not a registered classifier; --predictions needs one")
    classifier = create_classifier(name, weights)
    if recorded and classifier.weights_sha256 and classifier.weights_sha256 != recorded:
        raise CheckpointError(f"the {name} weights found ({classifier.weights_sha256[:12]}…) are not the ones "
                              f"the store was made with ({recorded[:12]}…); pass them with --weights")
    return classifier

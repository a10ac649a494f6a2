"""``advkit store info|merge``: inspect and join pair stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import JsonOption, emit, get_options


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

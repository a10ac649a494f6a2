"""``advkit defend IN OUT``: denoise an image, a folder of images or a pair store with AdvFilter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import DeviceOption, JsonOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("defend")
    def defend(
        ctx: typer.Context,
        src: Annotated[
            str,
            typer.Argument(help="An image, a folder of images, a pair store (.h5), or 'sample' "
                                "(a folder named so: ./sample)."),
        ],
        dst: Annotated[
            str, typer.Argument(help="Output PNG, folder (a name ending in / is made if missing), or store.")
        ],
        denoiser: Annotated[
            str, typer.Option("--denoiser", help="A shipped denoiser name or a checkpoint path.")
        ] = "default",
        head: Annotated[int | None, typer.Option("--head", help="Head of a multi-head denoiser (0-3).")] = None,
        tile: Annotated[int, typer.Option("--tile", help="Tile size for large images (bounded memory).")] = 512,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch for stores.")] = 128,
        model: Annotated[
            str | None, typer.Option("--model", help="For stores: classifier whose predictions are stored.")
        ] = None,
        weights: Annotated[Path | None, typer.Option("--weights", help="Weights file for --model.")] = None,
        save_uncertainty: Annotated[
            Path | None, typer.Option("--save-uncertainty", help="PA-Filt: write the fusion weight map as PNG.")
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output store.")] = False,
        device: DeviceOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Denoise with AdvFilter (by default the shipped CIFAR-10 Filt checkpoint, offline).

        `advkit defend sample OUT/` denoises the bundled sample photos into OUT/.
        """
        from advkit.defenses import AdvFilter
        from advkit.defenses.apply import defend_path, names_bundled_sample
        from advkit.utils import check_output_dir
        from advkit.errors import ImageReadError, UsageError

        opts = get_options(ctx, device=device, json=json_out)
        if tile < 32:
            raise UsageError(f"--tile must be at least 32, got {tile}")
        if not names_bundled_sample(src) and not Path(src).exists():
            raise ImageReadError(f"input not found: {src}")
        check_output_dir(dst)
        dev = device_of(opts)
        advfilter = AdvFilter(denoiser, head=head).to(dev)
        classifier = None
        if model is not None:
            from advkit.models import create_classifier

            classifier = create_classifier(model, weights).to(dev)
        with progress_bar(opts, "defend", unit="img") as on_progress:
            result = defend_path(advfilter, src, dst, device=dev, tile=tile, batch_size=batch_size,
                                 overwrite=overwrite, save_uncertainty=save_uncertainty, classifier=classifier,
                                 on_progress=on_progress)
        result = {"denoiser": advfilter.source, "arch": advfilter.arch, **result}
        emit(opts, result)

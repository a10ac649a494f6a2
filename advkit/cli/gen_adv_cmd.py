"""``advkit gen-adv``: adversarial (or noisy) image-pair datasets in HDF5 pair stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import DeviceOption, JsonOption, SeedOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("gen-adv")
    def gen_adv(
        ctx: typer.Context,
        data: Annotated[str, typer.Option("--data", help="Dataset: 'sample', a CIFAR .npz, an image folder, ...")],
        out: Annotated[Path, typer.Option("--out", help="Output pair store (.h5).")],
        model: Annotated[
            str | None, typer.Option("--model", help="Threat model (registry name). Optional for --attack noise.")
        ] = None,
        weights: Annotated[Path | None, typer.Option("--weights", help="Weights file for --model.")] = None,
        attack: Annotated[
            str,
            typer.Option("--attack", help="pgd (default), fgsm, apgd, apgd-dlr, mifgsm, dim, tidim, square, "
                         "autoattack, ... (any L∞ attack of `advkit attacks --norm linf` but the minimum-norm "
                         "ones) or noise."),
        ] = "pgd",
        eps: Annotated[str | None, typer.Option("--eps", help="Comma-separated L∞ radii in (0, 1].")] = None,
        eps_grid: Annotated[
            str | None, typer.Option("--eps-grid", help="A named grid: 'advfilter' (12 radii 1e-4 .. 5e-1).")
        ] = None,
        sigma: Annotated[
            str, typer.Option("--sigma", help="Noise std(s) for --attack noise, comma-separated.")
        ] = "0.1",
        steps: Annotated[
            int | None,
            typer.Option("--steps", help="Iterations (Square: queries); default the attack's own (PGD 40, "
                         "APGD 100, MI-FGSM family 10)."),
        ] = None,
        rel_step: Annotated[
            float | None, typer.Option("--rel-step", help="PGD's step as a fraction of eps (default (4/3)/steps: 1/30 at 40 steps).")
        ] = None,
        early_stop: Annotated[
            bool | None,
            typer.Option("--early-stop/--no-early-stop",
                         help="Stop attacking images once misclassified (default: the attack's own; PGD off)."),
        ] = None,
        attack_option: Annotated[
            list[str] | None,
            typer.Option("--attack-option", "-O", metavar="KEY=VALUE",
                         help="KEY=VALUE for the attack's constructor, e.g. -O decay=0.5 (repeatable; "
                         "`advkit attacks --json` lists each attack's)."),
        ] = None,
        precision: Annotated[str, typer.Option("--precision", help="fp32, tf32, bf16 or auto.")] = "fp32",
        channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last model input.")] = False,
        per_class: Annotated[int | None, typer.Option("--per-class", help="First N images of each class.")] = None,
        limit: Annotated[int | None, typer.Option("--limit", help="At most N images.")] = None,
        classes: Annotated[str | None, typer.Option("--classes", help="Class subset (names or indices).")] = None,
        image_size: Annotated[
            str | None,
            typer.Option("--image-size", help="H or H,W to resize+center-crop to; default: the model's input size."),
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch.")] = 128,
        shard: Annotated[str | None, typer.Option("--shard", help="Write only shard i of n: 'i/n'.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted run (same arguments).")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
        device: DeviceOption = None,
        seed: SeedOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Attack every selected image at every radius and store (clean, perturbation) pairs.

        The store appears under OUT only when complete; an interrupted run leaves OUT.partial,
        which `--resume` with the same arguments finishes, giving the same arrays as an
        uninterrupted run.
        """
        from advkit.attacks.generate import (
            build_generation_attack,
            check_eps,
            check_generation_attack,
            generate_pairs,
            parse_radii,
            parse_shard,
        )
        from advkit.data.sources import open_source, resolve_classes, select_indices
        from advkit.data.store import check_store_name
        from advkit.errors import UsageError
        from advkit.models import create_classifier, get_model_spec
        from advkit.precision import check_precision, resolve_precision
        from advkit.utils import parse_float_list, seed_everything

        opts = get_options(ctx, device=device, seed=seed, json=json_out)
        dev = device_of(opts)
        attack_name = attack.lower()
        check_generation_attack(attack_name)
        if resume and overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        check_store_name(out)
        if attack_name == "noise":
            radii = check_eps(parse_float_list(sigma, "sigma"), what="sigma")
        else:
            radii = parse_radii(eps, eps_grid)
            if model is None:
                raise UsageError(f"--attack {attack_name} needs --model")
        check_precision(precision)
        if steps is not None and steps < 1:
            raise UsageError(f"--steps must be >= 1, got {steps}")
        shard_t = parse_shard(shard)
        size = _parse_size(image_size)
        if size is None and image_size is None and model is not None:
            size = get_model_spec(model).input_size
        classifier = create_classifier(model, weights) if model is not None else None
        source = open_source(data, image_size=size if size != "native" else None)
        class_ids = resolve_classes(classes, source.class_names) if classes else None
        indices = select_indices(source.labels(), classes=class_ids, per_class=per_class, limit=limit)
        if classifier is not None:
            classifier = classifier.to(dev)
            for p in classifier.parameters():
                p.requires_grad_(False)
            if channels_last:
                classifier = classifier.to(memory_format=__import__("torch").channels_last)
        prec = resolve_precision(precision, dev)
        seed_everything(opts.seed)
        atk = build_generation_attack(
            attack_name, classifier, steps=steps, rel_step=rel_step, early_stop=early_stop, seed=opts.seed,
            precision=prec, channels_last=channels_last, options=attack_option or (),
        )
        with progress_bar(opts, f"gen-adv {attack_name}", unit="img") as on_progress:
            result = generate_pairs(
                source=source,
                indices=indices,
                attack=atk,
                eps=radii,
                out=out,
                model=classifier,
                model_id=classifier.identity if classifier is not None else "none",
                seed=opts.seed,
                batch_size=batch_size,
                device=dev,
                shard=shard_t,
                resume=resume,
                overwrite=overwrite,
                bounded=attack_name != "noise",
                on_progress=on_progress,
            )
        summary = {**result.summary, "rows_computed": result.rows_computed, "already_complete": result.already_complete}
        emit(opts, summary, lambda console: _render_summary(console, summary))


def _parse_size(text: str | None):
    from advkit.errors import UsageError

    if text is None:
        return None
    if text.strip().lower() == "native":
        return "native"
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise UsageError(f"--image-size must be H or H,W (or 'native'), got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UsageError(f"--image-size must be H or H,W with positive sizes, got {text!r}")
    return tuple(parts)


def _render_summary(console, summary) -> None:  # noqa: ANN001
    from rich.table import Table

    console.print(
        f"[bold]{summary['path']}[/]: {summary['rows_done']}/{summary['rows']} rows, "
        f"images {'×'.join(map(str, summary['image_shape']))}, model {summary['model']}, "
        f"precision {summary['precision']}"
    )
    table = Table("eps", "rows", "acc clean", "acc adv", "changed")

    def fmt(v):  # noqa: ANN001
        return "—" if v is None else f"{v:.4f}"

    for row in summary["per_eps"]:
        table.add_row(f"{row['eps']:g}", str(row["rows"]), fmt(row.get("acc_clean")), fmt(row.get("acc_adv")),
                      fmt(row.get("changed")))
    console.print(table)

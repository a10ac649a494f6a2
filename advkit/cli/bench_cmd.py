"""``advkit bench``: reproduce the papers' tables (AdvFilter robustness, oblivious and adaptive; Pasadena)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import DeviceOption, JsonOption, SeedOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        ctx: typer.Context,
        model: Annotated[str, typer.Option("--model", help="Classifier(s), comma-separated (registry names).")],
        out: Annotated[Path, typer.Option("--out", help="Folder for results.json/.csv/.md, plots and cells.")] = Path(
            "results"),
        data: Annotated[str | None, typer.Option("--data", help="Dataset source of the test images.")] = None,
        suite: Annotated[str, typer.Option("--suite", help="advfilter (defenses under PGD) or pasadena.")] = "advfilter",
        defense: Annotated[
            str, typer.Option("--defense", help="Comma list: advfilter, pafilt, a denoiser name/path, jpeg, "
                              "smoothing, bitdepth, tvm, none.")
        ] = "none,advfilter,pafilt,jpeg,smoothing,bitdepth,tvm",
        eps: Annotated[str | None, typer.Option("--eps", help="Comma-separated L∞ radii (default 1e-3,1e-2).")] = None,
        eps_grid: Annotated[str | None, typer.Option("--eps-grid", help="A named grid: 'advfilter'.")] = None,
        attack: Annotated[str, typer.Option("--attack", help="The attack (pgd).")] = "pgd",
        steps: Annotated[int, typer.Option("--steps", help="PGD iterations of the oblivious attack.")] = 40,
        mode: Annotated[str, typer.Option("--mode", help="oblivious, adaptive or both (comma list).")] = (
            "oblivious,adaptive"),
        adaptive_steps: Annotated[int, typer.Option("--adaptive-steps", help="Iterations of the adaptive attack.")] = 40,
        adaptive_attack: Annotated[str, typer.Option(
            "--adaptive-attack",
            help="Attack through the pipeline: pgd, apgd-ce, apgd-dlr, fab-t, square (steps = queries), spsa "
                 "(black box: steps of 128 directions, 256 queries each), hopskipjump (labels only, L∞), "
                 "autoattack (steps for APGD/FAB, 50× as many Square queries) or autoattack-rand (APGD-CE and "
                 "APGD-DLR with EOT, for randomized defenses).")] = "pgd",
        adaptive_eot: Annotated[
            int | None, typer.Option("--adaptive-eot", help="EOT: gradient passes each adaptive step averages, "
                                     "for randomized defenses (default 20 for autoattack-rand, else 1).",
                                     show_default=False)
        ] = None,
        defense_draws: Annotated[
            int, typer.Option("--defense-draws", help="Randomized defenses: predictions per attacked image; the "
                              "tables show the mean accuracy [and the accuracy under every draw].")
        ] = 1,
        adaptive_rel_step: Annotated[
            float | None, typer.Option("--adaptive-rel-step", help="Adaptive PGD step as a fraction of eps "
                                       "(default 2.5 / --adaptive-steps).", show_default=False)
        ] = None,
        sanity_n: Annotated[int, typer.Option("--sanity-n", help="Images in the unbounded-PGD sanity check.")] = 100,
        sanity_steps: Annotated[int, typer.Option("--sanity-steps", help="Iterations of the sanity check.")] = 50,
        n: Annotated[int, typer.Option("--n", help="Test images, balanced over classes.")] = 1000,
        adv: Annotated[
            list[str] | None, typer.Option("--adv", help="Reuse a pair store instead of attacking (repeatable; "
                                           "matched to a model by the store's record).")
        ] = None,
        method: Annotated[str, typer.Option("--method", help="Pasadena suite: attack-denoise methods.")] = (
            "pasadena,denoise,mifgsm,denoise+mifgsm"),
        denoiser: Annotated[str, typer.Option("--denoiser", help="Pasadena suite: the KPN.")] = "kpn-cifar10",
        sweep: Annotated[bool, typer.Option("--sweep", help="Pasadena suite: also sweep λ×θ (Pasadena) and ε "
                                            "(baselines) for success-vs-SSIM curves.")] = False,
        sweep_lam: Annotated[str, typer.Option("--sweep-lam", help="λ values of the sweep.")] = "0.5,0.8,0.9,0.97",
        sweep_theta: Annotated[str, typer.Option("--sweep-theta", help="θ values of the sweep.")] = "0.3,0.45,0.6",
        sweep_eps: Annotated[str, typer.Option("--sweep-eps", help="Baselines' ε values of the sweep.")] = (
            "2/255,4/255,8/255,16/255"),
        sweep_confidence: Annotated[str, typer.Option(
            "--sweep-confidence", help="Pasadena's κ values of the sweep (margin kept past the flip; '' for none).")
        ] = "10,20,40",
        weights: Annotated[Path | None, typer.Option("--weights", help="Weights file for a single --model.")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size")] = 100,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an existing --out.")] = False,
        device: DeviceOption = None,
        seed: SeedOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Accuracy of each defense under oblivious and adaptive attacks over radii.

        Or the Pasadena table (--suite pasadena). Written to OUT as results.json, results.csv,
        results.md and PNG plots; resumes from OUT.
        """
        from advkit.attacks.generate import parse_radii
        from advkit.bench import BenchConfig, run_bench
        from advkit.bench.runner import adv_stores_by_model
        from advkit.utils import parse_float_list, split_list

        opts = get_options(ctx, device=device, seed=seed, json=json_out)
        radii = parse_radii(eps, eps_grid, default="1e-3,1e-2")
        models = split_list(model)
        config = BenchConfig(
            models=models, suite=suite, data=data, defenses=split_list(defense),
            eps=radii, attack=attack, steps=steps, modes=split_list(mode),
            adaptive_steps=adaptive_steps, adaptive_attack=adaptive_attack, adaptive_rel_step=adaptive_rel_step,
            adaptive_eot=adaptive_eot, defense_draws=defense_draws, sanity_n=sanity_n, sanity_steps=sanity_steps, n=n,
            adv=adv_stores_by_model(adv or []), methods=split_list(method),
            denoiser=denoiser, sweep=sweep, sweep_lams=parse_float_list(sweep_lam, "lam"),
            sweep_thetas=parse_float_list(sweep_theta, "theta"), sweep_eps=parse_float_list(sweep_eps, "eps"),
            sweep_confidences=parse_float_list(sweep_confidence, "confidence") if sweep_confidence.strip() else [],
            batch_size=batch_size, seed=opts.seed,
            weights=str(weights) if weights is not None else None,
        )
        with progress_bar(opts, f"bench {suite}", unit="img") as on_progress:
            report = run_bench(config, out, device=device_of(opts), overwrite=overwrite, on_progress=on_progress)
        emit(opts, report, lambda console: console.print((out / "results.md").read_text(), markup=False))

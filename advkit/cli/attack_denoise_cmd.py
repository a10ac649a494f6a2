"""``advkit attack-denoise``: the Pasadena adversarial denoise attack and its baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import DeviceOption, JsonOption, SeedOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("attack-denoise")
    def attack_denoise(
        ctx: typer.Context,
        data: Annotated[str, typer.Option("--data", help="Dataset of clean images (noise is added).")],
        model: Annotated[str, typer.Option("--model", help="Source (white-box) model.")],
        out: Annotated[Path, typer.Option("--out", help="A pair store (.h5) or a folder (stores + PNGs).")],
        denoiser: Annotated[str, typer.Option("--denoiser", help="KPN: a shipped name or checkpoint path.")] = "kpn-cifar10",
        method: Annotated[
            str, typer.Option("--method", help="pasadena, denoise, fgsm, mifgsm, dim, tifgsm, timifgsm, tidim, nifgsm, "
                              "sinifgsm, vmifgsm, vnifgsm, or denoise+<baseline>; comma-separated for several.")
        ] = "pasadena",
        variant: Annotated[str, typer.Option("--variant", help="Pasadena update rule: advkit or paper.")] = "advkit",
        lam: Annotated[float, typer.Option("--lam", help="λ: attack-loss weight.")] = 0.9,
        theta: Annotated[float, typer.Option("--theta", help="θ: edge-mask threshold.")] = 0.45,
        steps: Annotated[int | None, typer.Option("--steps", help="Max iterations (advkit 50, paper 10).")] = None,
        alpha: Annotated[float, typer.Option("--alpha", help="Paper variant step α.")] = 0.1,
        kernel_step: Annotated[float, typer.Option("--kernel-step", help="advkit variant kernel step.")] = 0.01,
        loss: Annotated[
            str | None, typer.Option("--loss", help="Attack loss: margin or ce (advkit margin, paper ce).")
        ] = None,
        refine: Annotated[
            int | None, typer.Option("--refine", help="Line-search bisection steps (advkit 8, paper 0; 0 = off).")
        ] = None,
        confidence: Annotated[
            float, typer.Option("--confidence", help="κ: margin to keep past the flip (advkit; quality for transfer).")
        ] = 0.0,
        diversity: Annotated[
            float, typer.Option("--diversity", help="DIM transform probability on the attack loss's input (advkit).")
        ] = 0.0,
        edges: Annotated[str, typer.Option("--edges", help="sobel (multi-scale) or canny.")] = "sobel",
        canny_width: Annotated[int, typer.Option("--canny-width", help="Canny dilation width (3-9).")] = 3,
        gaussian_denoiser: Annotated[
            bool, typer.Option("--gaussian", help="Ablation: Gaussian kernels instead of the KPN's.")
        ] = False,
        eps: Annotated[str, typer.Option("--eps", help="Baselines' L∞ radius.")] = "8/255",
        sigma: Annotated[float, typer.Option("--sigma", help="Input noise std.")] = 0.1,
        transfer_to: Annotated[
            str | None, typer.Option("--transfer-to", help="Target models for transfer rates (comma list).")
        ] = None,
        per_class: Annotated[int | None, typer.Option("--per-class")] = None,
        limit: Annotated[int | None, typer.Option("--limit")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size")] = 100,
        save_png: Annotated[bool, typer.Option("--save-png", help="Also write noisy/output PNGs (folder --out).")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
        device: DeviceOption = None,
        seed: SeedOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Pasadena (denoise while fooling the model) or a baseline; reports success and quality.

        Writes the attacked images and prints success, transfer, PSNR, SSIM, PSNR_L and BRISQUE.
        """
        from advkit.attacks.denoise_experiment import run_attack_denoise

        opts = get_options(ctx, device=device, seed=seed, json=json_out)
        with progress_bar(opts, "attack-denoise", unit="img") as on_progress:
            result = run_attack_denoise(
                data=data, model=model, out=out, denoiser=denoiser, methods=method, variant=variant, lam=lam,
                theta=theta, steps=steps, alpha=alpha, kernel_step=kernel_step, loss=loss, refine=refine,
                confidence=confidence, diversity=diversity, edges=edges,
                canny_width=canny_width, gaussian=gaussian_denoiser, eps=eps, sigma=sigma, transfer_to=transfer_to,
                per_class=per_class, limit=limit, batch_size=batch_size, save_png=save_png, overwrite=overwrite,
                device=device_of(opts), seed=opts.seed, on_progress=on_progress,
            )
        emit(opts, result, lambda console: _render(console, result))


def _render(console, result) -> None:  # noqa: ANN001
    from rich.table import Table

    targets = sorted({t for r in result["methods"].values() for t in r["transfer"]})
    table = Table("method", "success", "on correct", *[f"→ {t}" for t in targets], "PSNR", "SSIM", "PSNR_L", "BRISQUE")
    for name, r in result["methods"].items():
        soc = r["success_on_correct"]
        table.add_row(name, f"{r['success']:.3f}", "—" if soc is None else f"{soc:.3f}",
                      *[f"{r['transfer'][t]:.3f}" for t in targets], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
                      f"{r['psnr_l']:.2f}", f"{r['brisque']:.1f}")
    console.print(f"{result['n']} images from {result['data']}, source model {result['model']}; "
                  f"noisy input: PSNR {result['noisy']['psnr']:.2f}, SSIM {result['noisy']['ssim']:.3f}")
    console.print(table)
